#!/bin/sh
# A device call of 2026-11-29's sixth session (issue 10): the indexer's integer kernel (k_idx_score_i8)
# and the keys' 8-bit form. Tests touched by it (test_idx, test_engine every part, test_accel's packed
# restore, test_mark), memcheck of test_engine's memcheck part and test_idx's small cases, then the
# prefill rows with the integer kernel (the default) and, for comparison in the same run, with
# k_idx_score_tc2 (CTX_CUDA_IDX_I8=0). Binaries from tools/gpu/mkcarry6.sh in the flat folder $1:
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s8.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
# Logs under $OUT; BUDGET (s, default 520) bounds the whole.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-520} - ($(date +%s) - T0) )); }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
: >"$OUT/tests.txt"
for t in ${TESTS:-test_idx test_engine test_accel test_mark}; do
    [ -x "$B/$t" ] || continue
    t0=$(date +%s)
    echo "==== $t" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,moe,mhc,afuse,dtc} timeout ${TEST_TIMEOUT:-170} "$B/$t" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "(i) $t exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
done
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -20 | tee -a "$S"
grep -E "integer tensor cores|^ok.*8-bit|^ok.*idx:" "$OUT/tests.txt" | cut -c1-250 | head -12 | tee -a "$S"
for m in ${PREFILL-1 0}; do # PREFILL="" skips the prefill rows
    [ "$(left)" -gt 90 ] || break
    t0=$(date +%s)
    CTX_CUDA_IDX_I8=$m timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx ${CTXS:-4096,131072,500000} >"$OUT/prefill-i8-$m.txt" 2>&1
    say "(ii) prefill bench CTX_CUDA_IDX_I8=$m exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \||Full|full|estimate|indexer" "$OUT/prefill-i8-$m.txt" | cut -c1-300 | head -24 | tee -a "$S"
done
for m in ${DECODE:-}; do # decode rows with the integer kernels on / off
    [ "$(left)" -gt 80 ] || break
    t0=$(date +%s)
    CTX_CUDA_IDX_I8=$m timeout 90 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile >"$OUT/decode-i8-$m.txt" 2>&1
    say "(iv) decode CTX_CUDA_IDX_I8=$m exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| flash4 |^\| indexer|^by layer|^\| +(4096|131072|500000) \| 0\." "$OUT/decode-i8-$m.txt" | cut -c1-200 | head -16 | tee -a "$S"
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ "$(left)" -gt 60 ]; then
    t0=$(date +%s)
    { CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine";
      CTX_IDX_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_idx"; } >"$OUT/sanitizer.txt" 2>&1
    say "(iii) memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
say "total $(($(date +%s) - T0)) s"
