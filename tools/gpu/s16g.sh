#!/bin/sh
# 2026-11-29 fourteenth session (issue 10): the check of the indexer kernels' shared helpers
# (ie_fill_weights, ie_slow_terms, used by k_idx_score_i8e and k_idx_score_iwg): test_idx (i8e and iwg
# bit for bit equal to i8 on every case), test_engine's idx part, test_idx's small cases under memcheck,
# then the indexer table once (the same times).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16g.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 150 "$B/test_idx" >"$OUT/test_idx.txt" 2>&1
echo "test_idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_idx.txt") not ok"
grep -E "^not ok|^# .*differ" "$OUT/test_idx.txt" | cut -c1-300 | head -6
t0=$(date +%s)
CTX_ENGINE_PARTS=idx timeout 150 "$B/test_engine" >"$OUT/test_engine_idx.txt" 2>&1
echo "test_engine idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_idx.txt") not ok"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_IDX_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_idx" >"$OUT/idx-memcheck.txt" 2>&1
echo "test_idx quick under memcheck: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/idx-memcheck.txt") ok"
grep -E "ERROR SUMMARY" "$OUT/idx-memcheck.txt" | head -2
t0=$(date +%s)
timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
echo "prefill bench: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (16|256|2048) \||^Full" "$OUT/prefill.txt" | cut -c1-200 | head -5
