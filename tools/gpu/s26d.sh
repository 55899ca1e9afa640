#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): the small prefill kernels' issue-slot fixes
# (bf16r on cvt.rn.bf16.f32, exact reciprocal scaling and branch-free e2m1 rounding in the QDQs, index
# divisions without 64-bit calls, k_moe_combine16, wq_b into bf16 q16). test_engine's parts PARTS, test_attn
# and test_idx; then bench-gpu-engine --full --layers 8 on one GPU, the tree before (HEAD, carried as
# .out/head) and now alternating, ROUNDS times; then Nsight Compute on every launch of one flash4 chunk at 4096.
#   run(command="tar -xJf .out/s6/carry.tar.xz && xz -dk .out/head/bench-gpu-engine-head.xz && sh tools/gpu/s26d.sh s6 2>&1",
#       carry=[".out/s6", ".out/head"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
OLD=${OLD:-.out/head/bench-gpu-engine-head}
chmod +x "$OLD" 2>/dev/null
if [ -z "$NO_TESTS" ]; then
    gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-fixture,tiny,mid,wg,idx,moe,mhc}
    gpu_test test_attn 200
    gpu_test test_idx 200
fi
for r in $(seq ${ROUNDS:-2}); do
    gpu_full8 old-r$r "$OLD"
    gpu_full8 new-r$r "$C/bench-gpu-engine"
done
for P in ${POSITIONS:-4096}; do
    gpu_ncu_chunk $P
done
