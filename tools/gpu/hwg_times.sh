#!/bin/sh
# k_attn_hwg's launches timed by Nsight Compute (gpu__time_duration only) over bench-gpu-engine --suffix
# 2048 --ctx 500000 (into $OUT/ncu_light.csv), then a one-line summary: their count, the first four (one
# 4K chunk's layers: sliding, sliding, CSA, HCA) and the longest, in us. With --longest as $2 it prints
# only the 0-based index of the longest launch (s15d.sh's --launch-skip). Used by s15d-f.sh.
#   sh tools/gpu/hwg_times.sh s6 [--longest]
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 200 "$NCU" --clock-control none -k regex:k_attn_hwg --metrics gpu__time_duration.sum --csv --page raw \
    "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_light.csv" 2>"$OUT/ncu_light.err"
python3 - "$OUT/ncu_light.csv" "${2:-}" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1]))]
hi = [i for i, r in enumerate(rows) if r and r[0] == "ID"][0]  # the bench's own output comes first
ti = rows[hi].index("gpu__time_duration.sum")
d = [float(r[ti].replace(",", "")) / 1e3 for r in rows[hi + 2:] if len(r) > ti and "k_attn_hwg" in r[4]]
if sys.argv[2] == "--longest":
    print(max(range(len(d)), key=lambda i: d[i]))
else:
    print("k_attn_hwg launches:", len(d), "; the first 4 (4K chunk: swa, swa, csa, hca) us:",
          [round(x) for x in d[:4]], "; the longest us:", round(max(d)))
PY
