#!/bin/sh
# A device call of 2026-11-30's twenty-sixth session (issue 10), on nvidia-h200-x2: V4-Flash's 43 layers over both
# GPUs, the 500K prefill (and 131072 tokens pipelined) in chunks of each of CHUNKS (default 16384 8192 4096), in one
# run each of bench-gpu-engine --full (decode only at 4K, 4 steps; no suffix), to choose the prefill chunk.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s28b.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
for c in ${CHUNKS:-16384 8192 4096}; do
    t=$(date +%s)
    timeout ${FULL_TIMEOUT:-180} "$C/bench-gpu-engine" --full --ctx 4096 --steps 4 --suffix 0 --chunk $c >"$OUT/full-$c.txt" 2>&1
    echo "bench-gpu-engine --full --chunk $c: exit $? in $(($(date +%s) - t)) s"
    grep -E "layers and memory|^\| 500000 \| 2 \||^Pipelined|^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full-$c.txt" | sed 's/.*(cuda_multi_memory/(mem/' | cut -c1-260
done
