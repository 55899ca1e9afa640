#!/bin/sh
# One device run for the decode FP4 grouped GEMV (issue 10, kernels/gemm.cu V2): test_gemm (all of it:
# both FP4 kernels against kernels/ref.c, V2 bit-exact), `bench-gpu fp4` (V1 and V2 side by side at
# the engine's call shapes, with the copy floor of the same run), compute-sanitizer memcheck and
# racecheck over test_gemm's quick part, then one Nsight Compute report of V2 on the Flash w1/w3 row.
# Binaries built on the workstation, stripped, in the flat folder $1 (default: this script's folder):
# test_gemm, bench-gpu. Logs under $OUT; a summary on stdout.
#   sh tools/gpu/fp4dec.sh [CARRYDIR]
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-$(dirname "$0")}
export LD_LIBRARY_PATH="$B:$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/test_gemm" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
ldd "$B/test_gemm" | grep "not found" | tee -a "$OUT/device.txt"
t0=$(date +%s)
timeout ${TEST_TIMEOUT:-100} "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
echo "test_gemm exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
grep -E "^not ok|fp4" "$OUT/test_gemm.txt" | cut -c1-200
t0=$(date +%s)
timeout ${BENCH_TIMEOUT:-120} "$B/bench-gpu" fp4 >"$OUT/bench_fp4.txt" 2>&1
echo "bench-gpu fp4 exit $? in $(( $(date +%s) - t0 )) s"
cat "$OUT/bench_fp4.txt"
if [ "${SAN:-1}" = 1 ]; then
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    t0=$(date +%s)
    for tool in memcheck racecheck; do
        CTX_TEST_GEMM_QUICK=1 timeout ${SAN_TIMEOUT:-60} $CS --tool $tool --error-exitcode 9 "$B/test_gemm" \
            >>"$OUT/sanitizer.txt" 2>&1
        echo "$tool exit $?"
    done
    echo "sanitizer in $(( $(date +%s) - t0 )) s"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^not ok" "$OUT/sanitizer.txt"
fi
if [ "${NCU:-1}" = 1 ]; then
    NC=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    t0=$(date +%s)
    timeout ${NCU_TIMEOUT:-90} $NC --kernel-name regex:fp4_gemv2 --launch-skip 10 --launch-count 1 \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
        --section WarpStateStats --section SchedulerStats --section InstructionStats --print-details all \
        "$B/bench-gpu" profile >"$OUT/ncu_fp4v2.txt" 2>&1
    echo "ncu exit $? in $(( $(date +%s) - t0 )) s"
    grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|Registers Per|Block Limit|No Eligible|Warp Cycles Per Issued|Executed Ipc" "$OUT/ncu_fp4v2.txt" | head -30
fi
if [ "${SASS:-1}" = 1 ]; then
    CO=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
    $CO -sass "$B/bench-gpu" 2>/dev/null | awk '/Function : .*fp4_gemv2/{f=1} /Function : /&&!/fp4_gemv2/{f=0} f' >"$OUT/sass_fp4v2.txt"
    echo "sass: $(wc -l <"$OUT/sass_fp4v2.txt") lines"
fi
