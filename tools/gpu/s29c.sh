#!/bin/sh
# A device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200: a prefill chunk's compressor
# products on cuBLASLt's bf16 GEMM (cbf_lt, CTX_CUDA_CMP_LT). test_engine's prefill parts with it on (the
# fixture within its bounds, chunked prefill bit-identical to one chunk); --full --layers 8 off / on, two rounds
# alternating; Nsight Compute's time of every launch of a flash4 chunk of 4096 with it on.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && sh tools/gpu/s29c.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-mid,wg,fixture,tiny,long,idx,c16,pdl}
for r in ${ROUNDS:-1 2}; do
    gpu_full8 off-r$r "$C/bench-gpu-engine" CTX_CUDA_CMP_LT=0
    gpu_full8 on-r$r "$C/bench-gpu-engine" CTX_CUDA_CMP_LT=1
done
if [ -z "$NO_NCU" ]; then
    gpu_ncu_chunk 4096 >/dev/null
    grep -E "kernel time|k_bgemm|k_lin_split|k_stage_bf16|nvjet" "$OUT/chunk_4096.txt"
fi
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
