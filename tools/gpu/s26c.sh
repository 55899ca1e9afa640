#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): where the prefill's smaller kernels lose
# their time. Nsight Compute's full set with the SASS stall samples (ncu_sass.py) on one launch each of
# SPECS (tag:kernel-regex:launches-skipped:position), in one flash4 chunk of 4096 tokens after a random
# state of that position (CTX_BENCH_PROFILE_AT); then (unless NO_TESTS) test_engine's parts PARTS.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26c.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
for spec in ${SPECS:-iq:k_iq_prep_w:0:4096 qp:k_q_prep_w:0:4096 mix:k_hc_mix4:0:4096 post:k_hc_post:0:4096 swi:k_swiglu_quant:0:4096 comb:k_moe_combine4:0:4096 csa:k_attn_hsw:2:500000 hca:k_attn_hsw:3:500000}; do
    IFS=: read tag re skip pos <<EOS
$spec
EOS
    gpu_ncu_full $tag $re $skip $pos
done
tar -C "$OUT" -cJf "$OUT/details.tar.xz" $(cd "$OUT" && ls details_*.txt sass_*.txt) && rm -f "$OUT"/details_*.txt "$OUT"/sass_*.txt
[ -z "$NO_TESTS" ] && gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-wg}
