#!/bin/sh
# 2026-11-29 twelfth session, the FP8 grouped GEMM (V7 / V8, issue 10): test_moe_gemm, the experts'
# prefill rows (bench-gpu moe at S = 512 / 2048 / 8192), test_engine's fixture, tiny, mid and moe parts
# and test_accel with V7 on the engine's fast prefill path, the prefill A/B (exact: V6 + cuda_fp8_gemm;
# fast: V7 + cuBLASLt), then the rest of the GPU tests and Nsight Compute on V7 if time is left.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s14a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-530} - ($(date +%s) - T0) )); }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
: >"$OUT/tests.txt"
runt() { # name parts timeout
    t0=$(date +%s)
    echo "==== $1 $2" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=$2 timeout $3 "$B/$1" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $1 $2\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $1 $2\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "$1 [$2] exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
}
runt test_moe_gemm - 120
grep -E "^not ok|V7|CTAs per SM" "$OUT/tests.txt" | grep -E "^not ok|first miss|CTAs|largest" | cut -c1-300 | head -24 | tee -a "$S"
t0=$(date +%s)
for s in 512 2048 8192; do timeout 60 "$B/bench-gpu" moe $s; done >"$OUT/moe.txt" 2>&1
say "bench-gpu moe in $(($(date +%s) - t0)) s"
grep -E "^\| (V[5-8]|  *[0-9])" "$OUT/moe.txt" | cut -c1-230 | tee -a "$S"
runt test_engine fixture,tiny,mid,moe 150
runt test_accel - 100
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -20 | tee -a "$S"
grep -E "^# (synthetic|fixture: |chunked)" "$OUT/tests.txt" | cut -c1-300 | head -20 | tee -a "$S"
t0=$(date +%s)
timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
say "prefill bench exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| [0-9]+ \||Full|estimate|rejected" "$OUT/prefill.txt" | cut -c1-300 | head -30 | tee -a "$S"
for t in test_gemm test_kvpack test_idx test_attn test_wo test_multi test_mark; do
    [ "$(left)" -gt 120 ] && runt $t - 100
done
[ "$(left)" -gt 150 ] && runt test_engine long,pdl,topk,idx,c16,mhc,afuse,dtc 120
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
l=$(left)
if [ -n "$NCU" ] && [ "$l" -gt 40 ]; then
    SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section InstructionStats --section LaunchStats --section SchedulerStats"
    timeout $((l - 5)) "$NCU" $SEC --kernel-name regex:moe_gemm7 -c 2 "$B/bench-gpu" moe 2048 >"$OUT/ncu_moe7.txt" 2>&1
    say "ncu moe7 exit $?"
    grep -E "moe_gemm7|Duration|Throughput|Issue Slots|Eligible|Warp Cycles|Registers|Achieved Occupancy|Stall" "$OUT/ncu_moe7.txt" | cut -c1-160 | head -40 | tee -a "$S"
fi
say "s14a: done in $(($(date +%s) - T0)) s"
