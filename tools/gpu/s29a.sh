#!/bin/sh
# A device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200: the prefill's post left to the
# next site's mixes (k_hc_postmix4, CTX_CUDA_HC_PPOST). test_engine's mhc part (the new form against k_hc_post +
# k_hc_mix4, bit for bit) and the prefill parts; --full --layers 8 with the switch off / on, two rounds
# alternating; Nsight Compute's time of every launch of a flash4 chunk of 4096, off and on. Ran on a build with
# results/2026-12-01-s29/call1-postmix/postmix4.patch (not kept; the tree has no such switch).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && sh tools/gpu/s29a.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-mhc,fixture,tiny,mid,wg}
for r in 1 2; do
    gpu_full8 off-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_PPOST=0
    gpu_full8 on-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_PPOST=1
done
if [ -z "$NO_NCU" ]; then
    CTX_CUDA_HC_PPOST=0 gpu_ncu_chunk 4096
    mv "$OUT/chunk_4096.txt" "$OUT/chunk_4096-off.txt"
    mv "$OUT/ncu_chunk_4096.csv.xz" "$OUT/ncu_chunk_4096-off.csv.xz"
    gpu_ncu_chunk 4096
    grep -E "k_hc_" "$OUT/chunk_4096-off.txt" "$OUT/chunk_4096.txt"
fi
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
