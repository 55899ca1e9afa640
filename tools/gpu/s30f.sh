#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the bf16 streams' post
# vectorised (k_hc_post4v). --full --layers 8 with CTX_CUDA_X16 off / on in alternating rounds, test_engine's
# prefill parts, test_multi, then Nsight Compute's time of every launch of a flash4 chunk of 4096 (NO_NCU=1 skips).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s6 tests/kernels/test_engine tests/kernels/test_multi \
#       bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s6/carry.tar.xz && OUT=$OUT sh tools/gpu/s30f.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
for r in ${ROUNDS:-1 2}; do
    gpu_full8 x16off-r$r "$C/bench-gpu-engine" CTX_CUDA_X16=0
    gpu_full8 x16on-r$r "$C/bench-gpu-engine" CTX_CUDA_X16=1
done
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-mhc,fixture,tiny,mid,wg,long,pdl}
grep -E "x16" "$OUT/test_engine.txt" | cut -c1-200 | head -8
gpu_test test_multi 120
if [ -z "$NO_NCU" ]; then
    gpu_ncu_chunk 4096 >/dev/null
    grep -E "kernel time|k_hc_|k_x_" "$OUT/chunk_4096.txt"
fi
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
