#!/bin/sh
# 2026-11-29 thirteenth session: Nsight Compute on k_attn_hwg (issue 10). A light pass times every
# k_attn_hwg launch of bench-gpu-engine --suffix 2048 --ctx 500000 (hwg_times.sh: ncu_light.csv); then the longest one
# (an HCA layer's chunk at 500K) again with --set full (details.txt: every section, as text).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15d.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
IDX=${IDX:-$(sh tools/gpu/hwg_times.sh "$B" --longest)}
echo "longest launch: $IDX"
t0=$(date +%s)
timeout 250 "$NCU" --clock-control none -k regex:k_attn_hwg --launch-skip "$IDX" --launch-count 1 --set full \
    "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/details.txt" 2>"$OUT/ncu_full.err"
echo "full pass exit $? in $(($(date +%s) - t0)) s"
grep -E "Duration|Throughput|Executed Ipc|Issue Slots Busy|Registers|Achieved Occupancy|Stall|Warp Cycles|No Eligible|Bank|L2 Hit|Shared" "$OUT/details.txt" | head -60
