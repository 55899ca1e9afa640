#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: HCX's precision. test_engine's mhc
# part (the chunk partials of each form against sums in double, hcx_precision) and spec part (the MTP block
# against the CPU's, which HCX's first form, one mma chain a tile, had moved past its 0.03 bound) under
# CTX_CUDA_HC_MMA 1 and 2; then --full --layers 8 with modes 1 and 2 in alternating rounds.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s5 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s5/carry.tar.xz && OUT=$OUT sh tools/gpu/s31e.sh s5 2>&1", carry=[".out/s5"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
for m in 1 2; do
    gpu_test test_engine 240 CTX_ENGINE_PARTS=mhc,spec CTX_CUDA_HC_MMA=$m
    grep -E "hcx precision, mode|spec: MTP (logits, GPU vs the CPU|in two calls)|hcx: mid, HCX" "$OUT/test_engine.txt" | cut -c1-230
    mv "$OUT/test_engine.txt" "$OUT/test_engine-m$m.txt"
done
for r in ${ROUNDS:-1 2}; do
    gpu_full8 m1-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_MMA=1
    gpu_full8 m2-r$r "$C/bench-gpu-engine" CTX_CUDA_HC_MMA=2
done
xz -6 "$OUT"/test_engine-m*.txt
true
