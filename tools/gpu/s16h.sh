#!/bin/sh
# 2026-11-29 fourteenth session (issue 10), the review's refactors: the MoE GEMM kernels' tile header as one
# helper (moe_tile_of, every version) and the indexer kernels' block run (idx_run_at, i8e and iwg):
# test_moe_gemm (every version against V1 and the CPU), test_idx, test_engine's idx and moe parts,
# memcheck of the quick forms, then the prefill tables once (the same times).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16h.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for t in test_moe_gemm test_idx; do
    t0=$(date +%s)
    timeout 120 "$B/$t" >"$OUT/$t.txt" 2>&1
    echo "$t: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
    grep -E "^not ok" "$OUT/$t.txt" | cut -c1-250 | head -5
done
t0=$(date +%s)
CTX_ENGINE_PARTS=idx,moe timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine idx,moe: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok" "$OUT/test_engine.txt" | cut -c1-250 | head -5
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
{ CTX_MOE_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm";
  CTX_IDX_QUICK=1 timeout 40 "$CS" --tool memcheck --error-exitcode 9 "$B/test_idx"; } >"$OUT/sanitizer.txt" 2>&1
echo "memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
t0=$(date +%s)
timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
echo "prefill bench: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| 2048 \||^\| 500000 \| 2048|^Full" "$OUT/prefill.txt" | cut -c1-220 | head -4
