#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: prefill's residual streams as
# bf16 bits between the mHC kernels (CTX_CUDA_X16). --full --layers 8 with it off / on in alternating rounds,
# then test_engine (every prefill part; mhc has the x16 switch test) and test_multi.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s5 tests/kernels/test_engine tests/kernels/test_multi \
#       bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s5/carry.tar.xz && OUT=$OUT sh tools/gpu/s30e.sh s5 2>&1", carry=[".out/s5"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
for r in ${ROUNDS:-1 2}; do
    gpu_full8 x16off-r$r "$C/bench-gpu-engine" CTX_CUDA_X16=0
    gpu_full8 x16on-r$r "$C/bench-gpu-engine" CTX_CUDA_X16=1
done
gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-mhc,fixture,tiny,mid,wg,idx,long,c16,moe,pdl,topk}
grep -E "x16" "$OUT/test_engine.txt" | cut -c1-200 | head -8
gpu_test test_multi 120
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
