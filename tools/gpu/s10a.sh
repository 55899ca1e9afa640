#!/bin/sh
# A device call of 2026-11-29's eighth session (issue 10): the indexer's scores with the entries on the
# mma's rows (k_idx_score_i8e) and the HCA prefill attention from a bf16 cache by cp.async (k_attn_tc's
# C16 path). TESTS (default test_idx test_attn test_engine) with PARTS (test_engine's, default idx,c16),
# then the prefill rows with VAR (default CTX_CUDA_ATTN_C16; CTX_CUDA_IDX_I8E in the first call) = each
# of PREFILL (default "1 0") in the same run, memcheck of test_idx's small cases, test_attn and
# test_engine's memcheck part.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s10a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
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
for t in ${TESTS:-test_idx test_attn test_engine}; do
    [ -x "$B/$t" ] || continue
    t0=$(date +%s)
    echo "==== $t" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=${PARTS:-idx,c16} timeout ${TEST_TIMEOUT:-170} "$B/$t" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "(i) $t exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
done
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -20 | tee -a "$S"
grep -E "^# .*differ|i8e|idx:|c16:|bf16 cache|bf16-cache" "$OUT/tests.txt" | cut -c1-250 | head -40 | tee -a "$S"
for m in ${PREFILL-1 0}; do
    [ "$(left)" -gt 90 ] || break
    t0=$(date +%s)
    env ${VAR:-CTX_CUDA_ATTN_C16}=$m timeout 110 "$B/bench-gpu-engine" --suffix 8192 --ctx ${CTXS:-4096,131072,500000} >"$OUT/prefill-$m.txt" 2>&1
    say "(ii) prefill bench ${VAR:-CTX_CUDA_ATTN_C16}=$m exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \||Full|full|estimate|indexer" "$OUT/prefill-$m.txt" | cut -c1-300 | head -24 | tee -a "$S"
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ "$(left)" -gt 60 ]; then
    t0=$(date +%s)
    { CTX_IDX_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_idx";
      timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_attn";
      CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine"; } >"$OUT/sanitizer.txt" 2>&1
    say "(iii) memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
say "total $(($(date +%s) - T0)) s"
