#!/bin/sh
# One device call for the routed experts' wgmma kernels (CUDA_MOE_GEMM_V5 / V6, issue 10): test_moe_gemm
# (against the exact sums, the guard, determinism), `bench-gpu moe` (V1..V6 at S = 512 / 2048 / 8192),
# the engine's prefill rows with each variant of $VARIANTS (default "6") forced (CTX_CUDA_MOE_GEMM) next
# to the default's, test_engine's fixture/tiny/mid/moe parts with the last of them forced, and memcheck
# of test_moe_gemm's small cases.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/v5.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
# $1: the flat folder of tools/gpu/mkcarry6.sh. Logs under $OUT.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 150 "$B/test_moe_gemm" >"$OUT/test_moe_gemm.txt" 2>&1
echo "test_moe_gemm exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_moe_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_moe_gemm.txt") not ok"
grep -E "^not ok|V6|first miss" "$OUT/test_moe_gemm.txt" | cut -c1-300 | head -30
t0=$(date +%s)
timeout 120 "$B/bench-gpu" moe >"$OUT/moe.txt" 2>&1
echo "bench-gpu moe exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| +[0-9]+ \||V5|V6|CTAs" "$OUT/moe.txt" | cut -c1-200
for v in default ${VARIANTS:-6}; do
    t0=$(date +%s)
    if [ $v = default ]; then unset CTX_CUDA_MOE_GEMM; else export CTX_CUDA_MOE_GEMM=$v; fi
    timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 4096,131072,500000 >"$OUT/prefill_$v.txt" 2>&1
    echo "prefill ($v) exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9]+ \||Full|^\| [0-9]+ \| [0-9]+ \| " "$OUT/prefill_$v.txt" | cut -c1-250 | head -12
done
export CTX_CUDA_MOE_GEMM=$v
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid,moe timeout 120 "$B/test_engine" >"$OUT/test_engine_forced.txt" 2>&1
echo "test_engine (V$v forced) exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_forced.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_forced.txt") not ok"
grep "^not ok" "$OUT/test_engine_forced.txt" | cut -c1-250 | head
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
CTX_MOE_QUICK=1 timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm" >"$OUT/memcheck.txt" 2>&1
echo "memcheck exit $?: $(grep 'ERROR SUMMARY' "$OUT/memcheck.txt")"
