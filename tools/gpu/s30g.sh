#!/bin/sh
# The last device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the final tree's
# test_gemm (both cuBLASLt forms after the review's one layout maker) and test_engine's mid part (test_lt_rows).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_gemm tests/kernels/test_engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && OUT=$OUT sh tools/gpu/s30g.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=400)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_gemm 200
grep -E "rows form" "$OUT/test_gemm.txt" | cut -c1-160 | head -4
gpu_test test_engine 200 CTX_ENGINE_PARTS=${PARTS:-mid,fixture}
for f in test_engine test_gemm; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
