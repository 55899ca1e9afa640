#!/bin/sh
# Seventeenth session: k_lin_bf16 with a speculative step's two tokens side by side (the head's second
# row), and the two-token FP8 GEMV's activation loads in flight together. One call on one H200 after
# `sh tools/gpu/mkcarry6.sh build-cuda`:
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s19c.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
# test_gemm (its m = 2 cases bit-equal to act_quant + GEMV), test_engine's spec part (a two-token
# forward gives each row a one-token step's bits), fixture, tiny,
# mid and dtc parts; bench-gpu-spec at 4K / 128K (the two-token forward and its stage profile);
# memcheck of test_engine's memcheck part.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="$PWD/${1:-s6}"
export LD_LIBRARY_PATH="$B:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
T0=$(date +%s)
timeout 200 "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
echo "test_gemm exit $?: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
grep '^not ok' "$OUT/test_gemm.txt" | head -5
for p in spec fixture tiny mid dtc; do
    CTX_ENGINE_PARTS=$p timeout 200 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
    echo "test_engine $p exit $?: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
    grep '^not ok' "$OUT/test_engine_$p.txt" | head -5
done
timeout 200 "$B/bench-gpu-spec" --ctx 4096,131072 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec exit $? at $(($(date +%s) - T0)) s"
cat "$OUT/spec.txt"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    CTX_ENGINE_PARTS=memcheck timeout 100 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck exit $?: $(grep 'ERROR SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
fi
echo "s19c in $(($(date +%s) - T0)) s"
