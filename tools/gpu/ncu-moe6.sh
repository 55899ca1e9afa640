#!/bin/sh
# Nsight Compute on the routed experts' prefill GEMM V6 (moe_gemm6_kernel, the default) at S = 2048 and
# 8192 tokens of one V4-Flash layer (`bench-gpu moe S`: its first V6 launch, w1|w3), for the next
# session's look at the largest prefill stage (2026-11-29, eighth session; V5's profile is in
# results/2026-11-29y). Sections as ncu-s10.sh.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/ncu-moe6.sh s6 2>&1", carry=[".out/s6"])
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section InstructionStats --section LaunchStats --section SchedulerStats"
for S in 2048 8192; do
    t=$(date +%s)
    timeout ${NCU_TIMEOUT:-100} "$NCU" $SEC --kernel-name regex:moe_gemm6_kernel -c 2 "$C/bench-gpu" moe $S >"$OUT/ncu_moe6_$S.txt" 2>&1
    echo "ncu moe6 S=$S: exit $? in $(($(date +%s) - t)) s"
done
grep -E "moe_gemm6|Duration|Throughput|Pipe|pipeline|Achieved Occupancy|Registers|Issued|Eligible|No Eligible|Stall|Executed Ipc|Issue Slots|Warp Cycles|Active Warps" "$OUT"/ncu_moe6_*.txt | cut -c1-200 | head -120
