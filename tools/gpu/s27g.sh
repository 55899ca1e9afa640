#!/bin/sh
# A device call of 2026-11-30's twenty-fifth session (issue 10): the routed experts' decode GEMV in each of its
# configurations inside the decode graph (CTX_CUDA_FP4_GEMV 2: V2's pick by shape, 3..9: V2's fixed
# configurations, the same bits; 1: V1): flash4's graph step at CTXS, one process each.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27g.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
for v in ${VARIANTS:-2 3 4 5 6 7 8 9 2}; do
    CTX_CUDA_FP4_GEMV=$v timeout 100 "$C/bench-gpu-engine" --models flash4 --ctx ${CTXS:-131072} --steps 48 \
        --prefill-max 0 >"$OUT/fp4v$v.txt" 2>&1
    echo "CTX_CUDA_FP4_GEMV=$v: exit $?: $(grep -E '^\| flash4' "$OUT/fp4v$v.txt" | awk -F'|' '{printf "%s ", $6}')"
done
