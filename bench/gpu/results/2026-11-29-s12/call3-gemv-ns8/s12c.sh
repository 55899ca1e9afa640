#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): the FP8 decode GEMVs' deeper ring (8 stages
# for grids of at most two CTAs an SM) and wo_a's ring kernel: (i) test_gemm (rings of 4 and 8 byte-equal
# to the default), test_wo, test_multi; (ii) test_engine's parts PARTS; (iii) memcheck of test_gemm's
# quick part; (iv) flash4 decode, bench-gpu-engine --attn-ab AB (default 191,255,127: the tree before
# this session, + k_wo_a_ring, + the 8-stage GEMV rings) in one process.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12c.sh 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
for t in test_gemm test_wo test_multi; do
    t0=$(date +%s)
    CTX_WO_NO_TIMING=1 timeout 200 "$B/$t" >"$OUT/$t.txt" 2>&1
    say "(i) $t exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
    grep -E "^not ok" "$OUT/$t.txt" | cut -c1-250 | head -8 | tee -a "$S"
done
grep -E "ring" "$OUT/test_gemm.txt" | cut -c1-160 | head -4 | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-dtc,tiny,mid,long,pdl,moe} timeout ${TEST_TIMEOUT:-200} "$B/test_engine" >"$OUT/tests.txt" 2>&1
say "(ii) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_TEST_GEMM_QUICK=1 timeout 150 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm" >"$OUT/sanitizer-gemm.txt" 2>&1
    say "(iii) memcheck test_gemm exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer-gemm.txt") clean summaries"
    grep -hE "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer-gemm.txt" | head -6 | tee -a "$S"
fi
t0=$(date +%s)
timeout 150 "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-64} \
    --attn-ab ${AB:-191,255,127} >"$OUT/decode-ab.txt" 2>&1
say "(iv) decode --attn-ab ${AB:-191,255,127} exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt" | cut -c1-200 | tee -a "$S"
say "total $(($(date +%s) - T0)) s"
