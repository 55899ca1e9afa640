#!/bin/sh
# One device call for the dense FP8 GEMM on wgmma (CUDA_FP8_GEMM_W, issue 10): test_gemm (W within the
# EPS bound on every product case, every output written on the variant cases), `bench-gpu gemm` (every
# variant at V4-Flash's shapes, cuBLASLt beside), the engine's prefill rows with W forced
# (CTX_CUDA_FP8_GEMM=w) next to the default's, test_engine with W forced, memcheck of test_gemm's quick
# cases with W forced, and Nsight Compute on the wgmma kernels (moe_gemm5 at S = 2048, fp8_gemm_w).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/w.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 120 "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
echo "test_gemm exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
grep -E "^not ok|W \(wgmma\)|CTX_CUDA_FP8" "$OUT/test_gemm.txt" | cut -c1-220 | head -24
t0=$(date +%s)
timeout 90 "$B/bench-gpu" gemm >"$OUT/gemm.txt" 2>&1
echo "bench-gpu gemm exit $? in $(($(date +%s) - t0)) s"
grep -E "v2 \(tile|wgmma|cuBLASLt" "$OUT/gemm.txt" | cut -c1-200 | head -40
for v in default w; do
    t0=$(date +%s)
    if [ $v = default ]; then unset CTX_CUDA_FP8_GEMM; else export CTX_CUDA_FP8_GEMM=$v; fi
    timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 4096,131072,500000 >"$OUT/prefill_$v.txt" 2>&1
    echo "prefill ($v) exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9]+ \||Full|^\| [0-9]+ \| 2048 \| " "$OUT/prefill_$v.txt" | cut -c1-250 | head -12
done
export CTX_CUDA_FP8_GEMM=w
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid,long,moe timeout 120 "$B/test_engine" >"$OUT/test_engine_w.txt" 2>&1
echo "test_engine (W forced) exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_w.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_w.txt") not ok"
grep "^not ok" "$OUT/test_engine_w.txt" | cut -c1-250 | head
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
CTX_TEST_GEMM_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm" >"$OUT/memcheck.txt" 2>&1
echo "memcheck exit $?: $(grep 'ERROR SUMMARY' "$OUT/memcheck.txt")"
unset CTX_CUDA_FP8_GEMM
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section LaunchStats"
timeout 60 "$NCU" $SEC --kernel-name regex:moe_gemm5_kernel -c 1 "$B/bench-gpu" moe 2048 >"$OUT/ncu_moe5.txt" 2>&1
echo "ncu moe5 exit $?"
timeout 60 "$NCU" $SEC --kernel-name regex:fp8_gemm_w_kernel -c 1 "$B/bench-gpu" gemm 2048 >"$OUT/ncu_w.txt" 2>&1
echo "ncu w exit $?"
grep -E "Duration|Throughput|Pipe|Issue Slots|Eligible|Achieved Occupancy|Registers Per|Warp Cycles Per Issued" "$OUT/ncu_moe5.txt" "$OUT/ncu_w.txt" | cut -c1-150 | head -40
