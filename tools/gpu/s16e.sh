#!/bin/sh
# 2026-11-29 fourteenth session, the final tree (issue 10): k_idx_score_iwg and the top-k's vector reads.
# session6.sh over the tree (every GPU test with test_engine's parts, idx included; the prefill tables;
# decode rows; memcheck; no restore rows: restore did not change; bench-gpu if time is left), then
# compute-sanitizer's memcheck and racecheck on test_idx's small cases (iwg among them) and on
# test_engine's topk part, then the prefill tables once more with i8e (CTX_CUDA_IDX_WG=0).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16e.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,wg,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-360} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture: |chunked)|^not ok" "$OUT/tests.txt" | cut -c1-250 | head -30
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
    t0=$(date +%s)
    CTX_IDX_QUICK=1 timeout 60 "$CS" --tool $tool --error-exitcode 9 "$B/test_idx" >"$OUT/idx-$tool.txt" 2>&1
    echo "test_idx quick under $tool: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/idx-$tool.txt") ok, $(grep -c '^not ok' "$OUT/idx-$tool.txt") not ok"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid" "$OUT/idx-$tool.txt" | head -4
done
t0=$(date +%s)
CTX_ENGINE_PARTS=topk timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/topk-memcheck.txt" 2>&1
echo "test_engine topk under memcheck: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/topk-memcheck.txt") ok, $(grep -c '^not ok' "$OUT/topk-memcheck.txt") not ok"
grep -E "ERROR SUMMARY|Invalid" "$OUT/topk-memcheck.txt" | head -3
t0=$(date +%s)
CTX_CUDA_IDX_WG=0 timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-wg0.txt" 2>&1
echo "prefill bench, CTX_CUDA_IDX_WG=0: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (2048) \||^\| (4096|131072|500000) \||^Full" "$OUT/prefill-wg0.txt" | cut -c1-260 | head -12
