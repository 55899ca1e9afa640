#!/bin/sh
# A device call of 2026-11-29's ninth session (issue 10): the FP8 prefill GEMM's third kernel
# (CUDA_FP8_GEMM_V3, f16 wgmma). test_gemm (V3 within the bound, repeatable, token ranges on their own),
# the GEMM rows of bench-gpu at GEMM_M tokens (default 2048), test_engine's parts PARTS (default
# fixture,tiny,mid) with CTX_CUDA_FP8_GEMM=3, memcheck of test_gemm's quick cases, then the prefill rows
# of bench-gpu-engine with CTX_CUDA_FP8_GEMM = 2 and 3.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s11b.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 200 "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
say "(i) test_gemm exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
grep "^not ok" "$OUT/test_gemm.txt" | cut -c1-250 | head -10 | tee -a "$S"
grep "v3 wgmma" "$OUT/test_gemm.txt" | cut -c1-220 | head -8 | tee -a "$S"
t0=$(date +%s)
timeout 120 "$B/bench-gpu" gemm ${GEMM_M:-2048} >"$OUT/gemm.txt" 2>&1
say "(ii) bench-gpu gemm exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| fp8_gemm" "$OUT/gemm.txt" | grep -E "v2 \(tile|v3|cuBLAS" | cut -c1-200 | tee -a "$S"
t0=$(date +%s)
CTX_CUDA_FP8_GEMM=3 CTX_ENGINE_PARTS=${PARTS:-fixture,tiny,mid} timeout 200 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
say "(iii) test_engine (V3) exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep "^not ok" "$OUT/test_engine.txt" | cut -c1-250 | head -10 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_TEST_GEMM_QUICK=1 timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm" >"$OUT/sanitizer.txt" 2>&1
    say "(iv) memcheck test_gemm quick exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
for v in 2 3; do
    t0=$(date +%s)
    CTX_CUDA_FP8_GEMM=$v timeout 110 "$B/bench-gpu-engine" --suffix 8192 --ctx ${CTXS:-4096,131072,500000} >"$OUT/prefill-$v.txt" 2>&1
    say "(v) prefill bench CTX_CUDA_FP8_GEMM=$v exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \||Full|full|estimate" "$OUT/prefill-$v.txt" | cut -c1-250 | head -14 | tee -a "$S"
done
say "total $(($(date +%s) - T0)) s"
