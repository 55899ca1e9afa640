#!/bin/sh
# A device call of 2026-11-30's twenty-fifth session (issue 10), an experiment: stream priorities
# (CTX_CUDA_STREAM_PRIO 1: the engine's stream at the greatest priority, 2: the side streams there; both keep
# node priorities in the decode graphs). test_engine's parts PARTS under 1, then flash4's decode at CTXS with
# 0 / 1 / 2 in turn, one process each, ROUNDS times.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27f.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
[ -z "$NO_TESTS" ] && gpu_test test_engine 200 CTX_CUDA_STREAM_PRIO=1 CTX_ENGINE_PARTS=${PARTS:-dtc,moe}
for r in $(seq ${ROUNDS:-2}); do
    for p in 0 1 2; do
        CTX_CUDA_STREAM_PRIO=$p timeout 100 "$C/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} \
            --steps 48 --prefill-max 0 >"$OUT/prio$p-r$r.txt" 2>&1
        echo "prio $p round $r: $(grep -E '^\| flash4' "$OUT/prio$p-r$r.txt" | awk -F'|' '{printf "%s ", $6}')"
    done
done
