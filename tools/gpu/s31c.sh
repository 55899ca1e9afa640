#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: prefill's mHC pre in 256-thread
# blocks (k_hc_pre4q; CTX_CUDA_HC_PRE4Q=0 keeps k_hc_pre<4, 1>) and k_hc_mixt with its next piece's rows loaded
# under the current one's products, one or two 16-token tiles a warp (CTX_CUDA_HCX_TPW). test_engine's parts
# PARTS (mhc: pre4q against k_hc_pre<4, 1> bit for bit), then --full --layers 8 in alternating rounds: the
# committed kernels' settings (PRE4Q 0, TPW 2), PRE4Q 1 TPW 1, PRE4Q 1 TPW 2; then Nsight Compute's time of every
# launch of a flash4 chunk of 4096 (NO_NCU=1 skips).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s3 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s3/carry.tar.xz && OUT=$OUT sh tools/gpu/s31c.sh s3 2>&1", carry=[".out/s3"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_engine 240 CTX_ENGINE_PARTS=${PARTS:-mhc,mid,tiny}
grep -E "pre4q|hcx" "$OUT/test_engine.txt" | cut -c1-200 | head -8
for r in ${ROUNDS:-1 2}; do
    gpu_full8 base-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_PRE4Q=0 CTX_CUDA_HCX_TPW=2
    gpu_full8 q1t1-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_PRE4Q=1 CTX_CUDA_HCX_TPW=1
    gpu_full8 q1t2-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_PRE4Q=1 CTX_CUDA_HCX_TPW=2
done
gpu_ncu_hc
for f in test_engine; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
