#!/usr/bin/env python3
"""Summarise an Nsight Compute CSV (--csv --page raw) of every launch in a profiler range: per kernel
name its launches, GPU time, share, DRAM bytes and the bandwidth they imply, largest first.
usage: ncu_chunk.py ncu.csv"""
import collections
import csv
import sys


def num(r, k):
    v = r.get(k, "")
    try:
        return float(v.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    lines = open(sys.argv[1], errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{sys.argv[1]}: no ncu rows")
    agg = collections.OrderedDict()
    for r in csv.DictReader(lines[start:]):
        if not r.get("ID", "").isdigit():
            continue
        name = r["Kernel Name"].split("(")[0].replace("<unnamed>::", "").replace("void ", "")
        us = num(r, "gpu__time_duration.sum") / 1000.0
        by = num(r, "dram__bytes_read.sum") + num(r, "dram__bytes_write.sum")
        a = agg.setdefault(name, [0, 0.0, 0.0, set()])
        a[0] += 1
        a[1] += us
        a[2] += by
        a[3].add(f'{r.get("Grid Size", "")}x{r.get("Block Size", "")}')
    tot = sum(a[1] for a in agg.values())
    n = sum(a[0] for a in agg.values())
    print(f"# {n} launches, {tot / 1000.0:.3f} ms of kernel time (one at a time, no overlap)")
    print("| kernel | launches | total us | share | DRAM MB | GB/s | grids x blocks |")
    print("|---|---|---|---|---|---|---|")
    for name, a in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        gbs = a[2] / (a[1] * 1e3) if a[1] > 0 else 0.0
        print(f"| {name} | {a[0]} | {a[1]:.1f} | {100.0 * a[1] / tot:.1f}% | {a[2] / 1e6:.1f} | {gbs:.0f} | "
              f"{'; '.join(sorted(a[3])[:3])} |")


if __name__ == "__main__":
    main()
