#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: hc = 4's mHC mixes on tensor
# cores (HCX: bf16 mma chains, fn split in three bf16 terms; CTX_CUDA_HC_MMA=0 keeps the fp32 form).
# test_engine's parts PARTS (mhc: the decode paths against each other and HCX against the fp32 form; mid and
# tiny: the CPU engine's bounds and prefill kernels against the decode kernels bit for bit; fixture: the
# golden figures), --full --layers 8 with CTX_CUDA_HC_MMA 0 / 1 in alternating rounds, then Nsight Compute's
# time of every launch of a flash4 chunk of 4096 (NO_NCU=1 skips).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s2 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s2/carry.tar.xz && OUT=$OUT sh tools/gpu/s31b.sh s2 2>&1", carry=[".out/s2"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_engine 240 CTX_ENGINE_PARTS=${PARTS:-mhc,mid,tiny,fixture}
grep -E "hcx|hc:|fixture: cuda|legacy|prefill kernels" "$OUT/test_engine.txt" | cut -c1-220 | head -12
for r in ${ROUNDS:-1 2}; do
    gpu_full8 hcxoff-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_MMA=0
    gpu_full8 hcxon-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_MMA=1
done
gpu_ncu_hc
for f in test_engine; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
