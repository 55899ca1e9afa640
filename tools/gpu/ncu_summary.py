#!/usr/bin/env python3
"""Summarise tools/gpu/ncu-decode.sh's CSVs: the kernels of the last complete decode step (from one
k_embed launch to the next), their GPU time by kernel name and in launch order.
usage: ncu_summary.py ncu_flash4.csv [--order]"""
import collections
import csv
import sys


def launches(path):
    lines = open(path, errors="replace").read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
    rows = list(csv.DictReader(lines[start:]))
    out = []
    for r in rows:
        if not r.get("ID", "").isdigit():
            continue
        name = r["Kernel Name"].split("(")[0].replace("<unnamed>::", "")
        by = sum(float(r.get(k, "0").replace(",", "") or 0) for k in ("dram__bytes_read.sum", "dram__bytes_write.sum"))
        out.append((name, float(r["gpu__time_duration.sum"].replace(",", "")) / 1000.0, r["Grid Size"], r["Block Size"], by))
    return out


def main():
    seq = launches(sys.argv[1])
    idx = [i for i, s in enumerate(seq) if s[0].startswith("k_embed")]
    if len(idx) < 2:
        sys.exit("fewer than two k_embed launches: no complete step")
    step = seq[idx[-2]:idx[-1]]
    tot = sum(s[1] for s in step)
    print(f"{sys.argv[1]}: {len(step)} launches in the step, {tot:.1f} us of kernel time")
    agg = collections.defaultdict(lambda: [0.0, 0])
    for n, t, _, _, _ in step:
        agg[n][0] += t
        agg[n][1] += 1
    print("| kernel | launches | us | share | us/launch |\n|---|---|---|---|---|")
    for n, (t, c) in sorted(agg.items(), key=lambda x: -x[1][0]):
        print(f"| {n[:48]} | {c} | {t:.1f} | {100 * t / tot:.1f}% | {t / c:.2f} |")
    if "--order" in sys.argv:
        for n, t, g, b, by in step:
            print(f"{t:8.2f}  {n[:50]:50s} grid {g} block {b}  {by / 1e6:8.2f} MB {by / (t * 1e3):6.0f} GB/s")


main()
