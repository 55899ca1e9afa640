#!/bin/sh
# Nsight Compute on the eighth session's prefill kernels at 500K (issue 10): k_idx_score_i8e at S = 2048
# queries over 125,000 entries (bench-gpu-engine's indexer rows: its 10th launch) and k_attn_tc<true>
# (an HCA layer's chunk of 2048 at 500K: its 9th launch, after 4 at 4K and 4 at 128K). One device call:
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/ncu-s10.sh s6 2>&1", carry=[".out/s6"])
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section InstructionStats --section LaunchStats"
t=$(date +%s)
timeout ${NCU_TIMEOUT:-150} "$NCU" $SEC --kernel-name-base mangled --kernel-name regex:k_idx_score_i8eILi128 --launch-skip 9 -c 1 \
    "$C/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_i8e.txt" 2>&1
echo "ncu i8e: exit $? in $(($(date +%s) - t)) s"
t=$(date +%s)
timeout ${NCU_TIMEOUT:-150} "$NCU" $SEC --kernel-name-base mangled --kernel-name regex:k_attn_tcILb1E --launch-skip 8 -c 1 \
    "$C/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_attn.txt" 2>&1
echo "ncu attn: exit $? in $(($(date +%s) - t)) s"
grep -E "k_idx|k_attn|Duration|Throughput|Pipe|Achieved Occupancy|Registers|Issued|Eligible|No Eligible|Stall|Executed Ipc|Issue Slots|Warp Cycles" "$OUT/ncu_i8e.txt" "$OUT/ncu_attn.txt" | cut -c1-200 | head -120
