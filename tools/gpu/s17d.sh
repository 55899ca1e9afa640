#!/bin/sh
# 2026-11-30 fifteenth session (issue 10), the review's refactor: V7 and V8 as one template
# (moe_gemm7_kernel<64> / <128>, m7_lay: the ring; V7's PTX unchanged, V8's within 15 lines).
# test_moe_gemm, test_engine's moe part, memcheck of test_moe_gemm's quick cases, bench-gpu moe at
# S = 2048 and 4096 (the same times).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17d.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 150 "$B/test_moe_gemm" >"$OUT/test_moe_gemm.txt" 2>&1
echo "test_moe_gemm: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_moe_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_moe_gemm.txt") not ok"
grep -E "^not ok" "$OUT/test_moe_gemm.txt" | cut -c1-250 | head -8
t0=$(date +%s)
CTX_ENGINE_PARTS=moe timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine moe: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|V8" "$OUT/test_engine.txt" | cut -c1-250 | head -5
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_MOE_QUICK=1 timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm" >"$OUT/moe-memcheck.txt" 2>&1
echo "test_moe_gemm quick under memcheck: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/moe-memcheck.txt") ok, $(grep -c '^not ok' "$OUT/moe-memcheck.txt") not ok"
grep -E "ERROR SUMMARY|Invalid" "$OUT/moe-memcheck.txt" | head -3
for S in 2048 4096; do
    timeout 90 "$B/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
    echo "bench-gpu moe $S: exit $?"
    grep -E "^\| V7|^\| V8" "$OUT/moe-$S.txt" | cut -c1-200
done
