#!/bin/sh
# 2026-11-29 fourteenth session (issue 10): the prefill top-k under Nsight Compute. bench-gpu-engine's
# indexer rows launch k_topk_seg + k_topk_merge three times each for S = 16, 256, 2048 over 125K entries
# (a 500K context); --launch-skip 6 takes the first S = 2048 launch of each. Full sets, details pages.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16c.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for k in k_topk_seg k_topk_merge; do
    t0=$(date +%s)
    timeout 170 "$NCU" --set full -k regex:"$k" --launch-skip 6 --launch-count 1 --page details \
        "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_$k.txt" 2>"$OUT/ncu_$k.err"
    echo "ncu $k: exit $? in $(($(date +%s) - t0)) s"
    grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Issued Warp Per|No Eligible|Warp Cycles Per Issued|Memory Throughput|DRAM Throughput|L1/TEX Hit|L2 Hit|Block Limit|Executed Ipc A|Shared Memory Configuration Size|Dynamic Shared|Static Shared|Grid Size|Block Size" "$OUT/ncu_$k.txt" | head -30
    grep -iE "stall|est. speedup|bank" "$OUT/ncu_$k.txt" | cut -c1-220 | head -24
done
