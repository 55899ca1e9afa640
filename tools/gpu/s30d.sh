#!/bin/sh
# The last device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the tree's test_engine
# parts not run since the session's changes (tiny, long, pdl, c16, moe, mhc, afuse, dtc, spec), test_multi,
# test_moe_gemm; then --full --layers 8 with the session's three switches all off (the previous tree's paths:
# CTX_CUDA_LT_ROWS=0 CTX_CUDA_TOPK_R16=0 CTX_CUDA_MOE_BUCKET=0) and all on, two rounds alternating.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s4 tests/kernels/test_engine tests/kernels/test_multi \
#       tests/kernels/test_moe_gemm bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s4/carry.tar.xz && OUT=$OUT sh tools/gpu/s30d.sh s4 2>&1", carry=[".out/s4"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
for r in ${ROUNDS:-1 2}; do
    gpu_full8 off-r$r "$C/bench-gpu-engine" CTX_CUDA_LT_ROWS=0 CTX_CUDA_TOPK_R16=0 CTX_CUDA_MOE_BUCKET=0
    gpu_full8 on-r$r "$C/bench-gpu-engine"
done
gpu_test test_multi 120
gpu_test test_moe_gemm 120
gpu_test test_engine 360 CTX_ENGINE_PARTS=${PARTS:-tiny,long,pdl,c16,moe,mhc,afuse,dtc,spec}
for f in test_engine test_multi test_moe_gemm; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
