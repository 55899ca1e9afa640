#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): wo_a's decode kernel through shared-memory
# rings (k_wo_a_ring, CTX_CUDA_FUSE_ATTN bit 64): (i) test_wo (k_wo_a_ring byte-equal to k_wo_a_mma);
# (ii) test_engine's parts PARTS (default dtc,tiny,mid,long,pdl: bit 64 on and off byte-equal, the
# default against the CPU engine); (iii) memcheck over test_wo and test_engine's part memcheck;
# (iv) flash4 decode, bench-gpu-engine --attn-ab AB (default 63,127) in one process.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12b.sh 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
t0=$(date +%s)
timeout 120 "$B/test_wo" >"$OUT/test_wo.txt" 2>&1
say "(i) test_wo exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_wo.txt") ok, $(grep -c '^not ok' "$OUT/test_wo.txt") not ok"
grep -E "^not ok|same bytes|^# wo_a" "$OUT/test_wo.txt" | cut -c1-200 | head -12 | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-dtc,tiny,mid,long,pdl} timeout ${TEST_TIMEOUT:-200} "$B/test_engine" >"$OUT/tests.txt" 2>&1
say "(ii) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_WO_NO_TIMING=1 timeout 150 "$CS" --tool memcheck --error-exitcode 9 "$B/test_wo" >"$OUT/sanitizer-wo.txt" 2>&1
    say "(iii) memcheck test_wo exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer-wo.txt") clean summaries"
    t0=$(date +%s)
    CTX_ENGINE_PARTS=memcheck timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
    say "(iii) memcheck test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -hE "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer-wo.txt" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
t0=$(date +%s)
timeout 120 "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-64} \
    --attn-ab ${AB:-63,127} >"$OUT/decode-ab.txt" 2>&1
say "(iv) decode --attn-ab ${AB:-63,127} exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt" | cut -c1-200 | tee -a "$S"
say "total $(($(date +%s) - T0)) s"
