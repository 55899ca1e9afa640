#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): the prefill forms of this session
# (k_hc_mix4 two tokens a thread, CTX_CUDA_HCM2; wq_b into bf16 q16, CTX_CUDA_Q16_IN). test_engine's parts
# PARTS (wg: the forms against the old ones, bit for bit; tiny, mid: cp_check against the decode kernels);
# bench-gpu-engine --full --layers 8 on one GPU with both forms off, then on (ROUNDS times); Nsight Compute
# on every launch of one flash4 chunk at 4096 (ncu_chunk.py); then NCU_KERNELS (name:regex ...) with the
# full set and the SASS stall samples (ncu_sass.py) in one flash4 chunk at NCU_AT (default 500000).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-wg,tiny,mid}
for r in $(seq ${ROUNDS:-1}); do
    gpu_full8 off-r$r "$C/bench-gpu-engine" CTX_CUDA_HCM2=0 CTX_CUDA_Q16_IN=0
    gpu_full8 on-r$r "$C/bench-gpu-engine" CTX_CUDA_HCM2=1
done
for P in ${POSITIONS:-4096}; do
    gpu_ncu_chunk $P
done
for kv in ${NCU_KERNELS:-csa:k_attn_hsw mix:k_hc_mix4}; do
    gpu_ncu_full ${kv%%:*} ${kv#*:} 0 ${NCU_AT:-500000}
done
