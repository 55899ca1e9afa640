#!/bin/sh
# 2026-11-29 thirteenth session: Nsight Compute on k_attn_hwg (issue 10). A light pass times every
# k_attn_hwg launch of bench-gpu-engine --suffix 8192 --ctx 500000 (ncu_light.csv); then the longest one
# (an HCA layer's chunk at 500K) again with --set full (details.txt: every section, as text).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15d.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
t0=$(date +%s)
[ -n "$IDX" ] || timeout 200 "$NCU" --clock-control none -k regex:k_attn_hwg --metrics gpu__time_duration.sum,launch__grid_size --csv \
    --page raw "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_light.csv" 2>"$OUT/ncu_light.err"
echo "light pass exit $? in $(($(date +%s) - t0)) s, $(wc -l <"$OUT/ncu_light.csv") lines"
# the launch (0-based among k_attn_hwg's) with the largest duration
IDX=${IDX:-$(python3 - "$OUT/ncu_light.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1]))]
hi = [i for i, r in enumerate(rows) if r and r[0] == "ID"][0]  # the bench's own output comes first
ti = rows[hi].index("gpu__time_duration.sum")
data = [r for r in rows[hi + 2:] if len(r) > ti and "k_attn_hwg" in r[4]]
best = max(range(len(data)), key=lambda i: float(data[i][ti].replace(",", "")))
print(best)
PY
)}
echo "longest launch: $IDX"
t0=$(date +%s)
timeout 250 "$NCU" --clock-control none -k regex:k_attn_hwg --launch-skip "$IDX" --launch-count 1 --set full \
    "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/details.txt" 2>"$OUT/ncu_full.err"
echo "full pass exit $? in $(($(date +%s) - t0)) s"
grep -E "Duration|Throughput|Executed Ipc|Issue Slots Busy|Registers|Achieved Occupancy|Stall|Warp Cycles|No Eligible|Bank|L2 Hit|Shared" "$OUT/details.txt" | head -60
