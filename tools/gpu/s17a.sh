#!/bin/sh
# 2026-11-30 fifteenth session (issue 10): V8, the routed experts' grouped GEMM over 128-pair CTAs, and
# prefill chunks of 4096. test_moe_gemm (V8 against V7's bytes on every case), test_engine's moe and wg
# parts (a chunk of 800 on mid runs V8: bit-identical to chunks of 50), memcheck of test_moe_gemm's
# quick cases, bench-gpu moe at S = 2048 and 4096, then the prefill tables with chunks of 4096 (V8),
# of 4096 with V7 forced (CTX_CUDA_MOE_GEMM=7) and of 2048 (the tree before: V7), ptxas' SASS of V8.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17a.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 150 "$B/test_moe_gemm" >"$OUT/test_moe_gemm.txt" 2>&1
echo "test_moe_gemm: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_moe_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_moe_gemm.txt") not ok"
grep -E "^not ok" "$OUT/test_moe_gemm.txt" | cut -c1-250 | head -8
grep -E "V8" "$OUT/test_moe_gemm.txt" | cut -c1-200 | head -4
t0=$(date +%s)
CTX_ENGINE_PARTS=moe,wg timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine moe,wg: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|V8" "$OUT/test_engine.txt" | cut -c1-250 | head -5
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_MOE_QUICK=1 timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm" >"$OUT/moe-memcheck.txt" 2>&1
echo "test_moe_gemm quick under memcheck: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/moe-memcheck.txt") ok, $(grep -c '^not ok' "$OUT/moe-memcheck.txt") not ok"
grep -E "ERROR SUMMARY|Invalid" "$OUT/moe-memcheck.txt" | head -3
for S in 2048 4096; do
    t0=$(date +%s)
    timeout 90 "$B/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
    echo "bench-gpu moe $S: exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| V7|^\| V8" "$OUT/moe-$S.txt" | cut -c1-200
done
for run in "4096 v8" "4096 v7" "2048 v7"; do
    set -- $run
    t0=$(date +%s)
    if [ "$2" = v7 ] && [ "$1" = 4096 ]; then
        CTX_CUDA_MOE_GEMM=7 timeout 100 "$B/bench-gpu-engine" --suffix 8192 --chunk $1 --ctx 131072,500000 >"$OUT/prefill-$1-$2.txt" 2>&1
    else
        timeout 100 "$B/bench-gpu-engine" --suffix 8192 --chunk $1 --ctx 131072,500000 >"$OUT/prefill-$1-$2.txt" 2>&1
    fi
    echo "prefill bench chunk $1 ($2): exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-$1-$2.txt" | cut -c1-240 | tail -12
done
CO=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
[ -n "$CO" ] && "$CO" -sass -fun moe_gemm8_kernel "$B/bench-gpu" 2>/dev/null | xz -9 >"$OUT/v8.sass.xz"
ls -la "$OUT"
