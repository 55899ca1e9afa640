#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: the tree's test_engine (the
# last session's review commit f7ea419 had only been compiled; dtc with the weight prefetch's modes 2047, 3071,
# 8191 byte for byte against 1023), then flash4's graph decode step A/B'd over the prefetch bits (1024: the
# attention's weights, 2048: the MoE's, 4096: as line prefetches) in 4 alternating rounds of one process.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s1 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s1/carry.tar.xz && OUT=$OUT sh tools/gpu/s31a.sh s1 2>&1", carry=[".out/s1"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
t=$(date +%s)
timeout 300 "$C/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072} --steps ${STEPS:-48} \
    --prefill-max 0 --attn-ab ${AB:-1023,2047,3071,4095,8191} >"$OUT/decode-ab.txt" 2>&1
echo "bench-gpu-engine decode A/B: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| flash4|^\| model" "$OUT/decode-ab.txt"
[ -z "$NO_TESTS" ] && gpu_test test_engine 330 CTX_ENGINE_PARTS=${PARTS:-dtc,mid,mhc,topk,fixture,tiny}
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
true
