#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: one shard's worth of V4-Flash on one
# H200 (`--full --layers 22`: shard 0 of the two-GPU split, layers 0-21) through the whole 500K prefill, the 8K
# suffix at 500K and decode at 500K, with the switches of the last two sessions' changes all off (the tree of
# results/2026-12-01-s29's call9) and all on, in one call: a same-run ratio for the 43-layer estimate.
# VARIANTS (default "off on") picks the runs, CHUNK the prefill's chunk (bench-gpu-engine's default 8192).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s10 bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s10/carry.tar.xz && OUT=$OUT sh tools/gpu/s31j.sh s10 2>&1", carry=[".out/s10"],
#       kind="nvidia-h200", timeout_s=420)
. tools/gpu/lib.sh
gpu_setup "$1"
L=${LAYERS:-22}
for v in ${VARIANTS:-off on}; do
    if [ $v = off ]; then
        set -- CTX_CUDA_HC_MMA=0 CTX_CUDA_HC_PRE4Q=0 CTX_CUDA_LT_ROWS=0 CTX_CUDA_TOPK_R16=0 CTX_CUDA_MOE_BUCKET=0 CTX_CUDA_X16=0
    else
        set -- CTX_CUDA_HC_MMA=2
    fi
    _t=$(date +%s)
    env "$@" timeout ${FULL_TIMEOUT:-180} "$C/bench-gpu-engine" --full --layers $L --ctx 500000 --steps 4 --suffix 8192 \
        ${CHUNK:+--chunk $CHUNK} >"$OUT/full$L-$v${CHUNK:+-c$CHUNK}.txt" 2>&1
    echo "full --layers $L, $v${CHUNK:+, chunks of $CHUNK}: exit $? in $(($(date +%s) - _t)) s"
    grep -E "^\| (500000) \| 1 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^\| (0|245760|491808) \|" "$OUT/full$L-$v${CHUNK:+-c$CHUNK}.txt"
done
true
