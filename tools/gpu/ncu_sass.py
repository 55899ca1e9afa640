#!/usr/bin/env python3
"""Summarise Nsight Compute's SASS source page (ncu -i REP --page source --csv --print-source sass):
the instructions with the most warp stall samples, each with its share and its top stall reasons, and
the totals by opcode. Used by tools/gpu/s21c.sh."""
import csv
import sys
from collections import defaultdict


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except ValueError:
        return 0.0


def main(path):
    with open(path, newline="") as f:
        lines = [l for l in f if not l.startswith("==") and not l.startswith('"Kernel Name"')]
    rows = list(csv.DictReader(lines))
    if not rows:
        print("no rows")
        return
    keys = [k for k in rows[0].keys() if k]
    samp = next((k for k in keys if k.startswith("Warp Stall Sampling (All")), None)
    stall_cols = [k for k in keys if k.startswith("stall_")]
    src = next((k for k in keys if k.lower() == "source"), None)
    if not samp or not src:
        print("columns:", list(keys))
        return
    total = sum(num(r[samp]) for r in rows) or 1.0
    print("# %d SASS lines, %.0f stall samples" % (len(rows), total))
    by_op = defaultdict(float)
    for r in rows:
        words = [w for w in r[src].split() if not w.startswith("@")]  # a predicate comes first
        by_op[words[0].split(".")[0] if words else "?"] += num(r[samp])
    print("| opcode | share |")
    for op, v in sorted(by_op.items(), key=lambda x: -x[1])[:15]:
        print("| %s | %.1f%% |" % (op, 100 * v / total))
    print()
    print("| address | instruction | share | top reasons |")
    for r in sorted(rows, key=lambda r: -num(r[samp]))[:25]:
        reasons = sorted(((num(r[c]), c) for c in stall_cols), reverse=True)[:3]
        rs = ", ".join("%s %.0f" % (c.replace("stall_", ""), v) for v, c in reasons if v > 0)
        addr = r.get("Address", r.get("# Address", ""))
        print("| %s | %s | %.2f%% | %s |" % (addr, r[src].strip()[:70], 100 * num(r[samp]) / total, rs))


if __name__ == "__main__":
    main(sys.argv[1])
