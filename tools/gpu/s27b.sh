#!/bin/sh
# A device call of 2026-11-30's twenty-fifth session (issue 10): the decode attention's latency chain (ATTN_LAT,
# CTX_CUDA_FUSE_ATTN bit 512: k_attn_dtc's queries loaded at once, k_attn_combine unrolled to its launch's
# runs, cq's RMSNorm weights before the wait). test_engine's parts PARTS (dtc: every mode bit-identical to the
# default, tiny / mid: the CPU engine's bounds), test_attn, then flash4's decode at CTXS with the graph step
# A/B'd between 511 (bit 512 off) and 1023 in 4 alternating rounds of one process.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-dtc,afuse,tiny,mid}
[ -z "$NO_TESTS" ] && gpu_test test_attn 120
t=$(date +%s)
timeout 300 "$C/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-48} \
    --prefill-max 0 --attn-ab ${AB:-511,1023} ${PROFILE:+--profile} >"$OUT/decode-ab.txt" 2>&1
echo "bench-gpu-engine decode A/B: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt"
