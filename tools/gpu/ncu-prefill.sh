#!/bin/sh
# Nsight Compute on the two largest prefill stages at 500K (issue 10): the indexer's tensor-core
# score kernel (k_idx_score_tc2) at S = 2048 queries over 125,000 entries, from bench-gpu-engine's
# indexer rows, and the routed experts' grouped GEMM (moe_gemm4_kernel) at S = 2048, from
# `bench-gpu moe 2048`. Sections: speed of light, memory workload, compute workload, occupancy,
# warp-state statistics. One device call:
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/ncu-prefill.sh s6 2>&1", carry=[".out/s6"])
# $1: the flat folder holding bench-gpu-engine and bench-gpu (tools/gpu/mkcarry6.sh). Reports under $OUT.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section LaunchStats"
# the indexer rows launch k_idx_score_tc2 3 times at S = 4, 16 and 256 before S = 2048
t=$(date +%s)
timeout ${NCU_TIMEOUT:-120} "$NCU" $SEC --kernel-name regex:k_idx_score_tc2 --launch-skip 9 -c 1 \
    "$C/bench-gpu-engine" --suffix 2048 --ctx 500000 --models flash4 >"$OUT/ncu_idx.txt" 2>&1
echo "ncu idx: exit $? in $(($(date +%s) - t)) s"
t=$(date +%s)
timeout ${NCU_TIMEOUT:-120} "$NCU" $SEC --kernel-name regex:moe_gemm4_kernel -c 2 \
    "$C/bench-gpu" moe 2048 >"$OUT/ncu_moe.txt" 2>&1
echo "ncu moe: exit $? in $(($(date +%s) - t)) s"
grep -E "k_idx|moe_gemm4|Duration|Throughput|Pipe|Hit Rate|Achieved Occupancy|Registers|Issued|Eligible|No Eligible|Stall" "$OUT/ncu_idx.txt" "$OUT/ncu_moe.txt" | cut -c1-200 | head -120
