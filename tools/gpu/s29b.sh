#!/bin/sh
# A device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200: k_hc_mix4 in groups of JU mixes
# (CTX_CUDA_HCM_JU = 4, 8, 12; 0 the unrolled form). test_engine's tiny and mid parts under each (cp_check: the
# prefill mixes against the decode kernels, bit for bit); Nsight Compute's time of every launch of a flash4 chunk
# of 4096 under each; the full set on one k_hc_mix4 launch of forms 0 and 8. Ran on a build with
# results/2026-12-01-s29/call2-mix4ju/mix4-ju.patch and a launcher reading CTX_CUDA_HCM_JU (not kept).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && sh tools/gpu/s29b.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
for ju in ${JUS:-4 8 12}; do
    gpu_test test_engine 200 CTX_ENGINE_PARTS=tiny,mid CTX_CUDA_HCM_JU=$ju
    mv "$OUT/test_engine.txt" "$OUT/test_engine-ju$ju.txt"
done
for ju in 0 ${JUS:-4 8 12}; do
    CTX_CUDA_HCM_JU=$ju gpu_ncu_chunk 4096 >/dev/null
    mv "$OUT/chunk_4096.txt" "$OUT/chunk_4096-ju$ju.txt"
    mv "$OUT/ncu_chunk_4096.csv.xz" "$OUT/ncu_chunk_4096-ju$ju.csv.xz"
    echo "JU=$ju: $(grep -E 'k_hc_mix4|kernel time' "$OUT/chunk_4096-ju$ju.txt" | tr '\n' ' ')"
done
for ju in 0 8; do
    CTX_CUDA_HCM_JU=$ju gpu_ncu_full mix$ju k_hc_mix4 2 4096
    grep -E "Stall (No Instruction|Not Selected|Short Scoreboard|Long Scoreboard|Wait|MIO Throttle|Barrier|Math Pipe)" "$OUT/details_mix$ju.txt" | head -8
done
for f in "$OUT"/test_engine-*.txt "$OUT"/details_*.txt; do [ -f "$f" ] && xz -6 "$f"; done
