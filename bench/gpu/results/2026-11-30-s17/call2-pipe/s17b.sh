#!/bin/sh
# 2026-11-30 fifteenth session (issue 10), kept as the record of a tried variant (its kernel and the
# CTX_CUDA_MOE8_PIPE switch were removed after this call): V8's K loop pipelined (each warp converts stage
# kb + 1 while stage kb's wgmma runs; CTX_CUDA_MOE8_PIPE=0 kept the plain loop). test_moe_gemm (V8 against V7's
# bytes), memcheck of its quick cases, test_engine's moe part, bench-gpu moe at S = 4096 with the
# pipelined and the plain loop (alternating, twice each).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17b.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 150 "$B/test_moe_gemm" >"$OUT/test_moe_gemm.txt" 2>&1
echo "test_moe_gemm: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_moe_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_moe_gemm.txt") not ok"
grep -E "^not ok" "$OUT/test_moe_gemm.txt" | cut -c1-250 | head -8
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_MOE_QUICK=1 timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm" >"$OUT/moe-memcheck.txt" 2>&1
echo "test_moe_gemm quick under memcheck: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/moe-memcheck.txt") ok, $(grep -c '^not ok' "$OUT/moe-memcheck.txt") not ok"
grep -E "ERROR SUMMARY|Invalid" "$OUT/moe-memcheck.txt" | head -3
t0=$(date +%s)
CTX_ENGINE_PARTS=moe timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine moe: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|V8" "$OUT/test_engine.txt" | cut -c1-250 | head -5
for r in 1 2; do
    for pipe in 1 0; do
        CTX_CUDA_MOE8_PIPE=$pipe timeout 90 "$B/bench-gpu" moe 4096 >"$OUT/moe-4096-pipe$pipe-$r.txt" 2>&1
        echo "bench-gpu moe 4096, CTX_CUDA_MOE8_PIPE=$pipe, round $r: exit $?"
        grep -E "^\| V7|^\| V8" "$OUT/moe-4096-pipe$pipe-$r.txt" | cut -c1-200
    done
done
