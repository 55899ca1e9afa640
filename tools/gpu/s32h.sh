#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: the review commit (the e4m3 block scale,
# the pair conversion and SwiGLU's element as shared helpers of k_act_quant_f32, k_swiglu_quant and k_swiglu_quant16;
# the same expressions): test_engine's PARTS (its printed figures compared with call6's by hand: the same bits give
# the same figures).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s8 tests/kernels/test_engine, then
#   run(command="tar -xJf .out/s8/carry.tar.xz && OUT=$OUT sh tools/gpu/s32h.sh s8 2>&1", carry=[".out/s8"],
#       kind="nvidia-h200", timeout_s=240)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 200 CTX_ENGINE_PARTS=${PARTS:-prep,fixture,tiny,mid,moe}
true
