#!/bin/sh
# A device call of 2026-11-30's twenty-fifth session (issue 10): where a decode step's shared expert forks
# (MOE_FORK_GATE 16 / MOE_FORK_ROUTE 32 with MOE_SIDE). test_engine's parts PARTS (moe: every mode
# bit-identical to the serial path), then flash4's graph step at CTXS with the MoE modes AB (15: the fork
# before the gate, 31: after it, 47: after the router, 14: no side stream) in 4 alternating rounds of one process.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27e.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
[ -z "$NO_TESTS" ] && gpu_test test_engine 200 CTX_ENGINE_PARTS=${PARTS:-moe}
t=$(date +%s)
timeout 200 "$C/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-48} \
    --prefill-max 0 --attn-ab ${AB:-15,31,47,14} --ab-moe >"$OUT/moe-ab.txt" 2>&1
echo "bench-gpu-engine MoE A/B: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| flash4" "$OUT/moe-ab.txt"
