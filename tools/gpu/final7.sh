#!/bin/sh
# The last device call of 2026-11-29's fifth session (issue 10): the tree's GPU tests touched by the
# routed experts' default V6 (test_moe_gemm with V6 the default; test_engine, every part), and memcheck of
# test_engine's memcheck part. Logs under $OUT.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final7.sh s6 2>&1", carry=[".out/s6"], timeout_s=280)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for t in test_moe_gemm test_engine; do
    t0=$(date +%s)
    CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,moe,mhc,afuse} timeout 150 "$B/$t" >"$OUT/$t.txt" 2>&1
    echo "$t exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
    grep -E "^not ok|default kernel|cuda_moe_gemm runs" "$OUT/$t.txt" | cut -c1-220 | head -8
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/memcheck.txt" 2>&1
echo "memcheck test_engine exit $?: $(grep 'ERROR SUMMARY' "$OUT/memcheck.txt")"
