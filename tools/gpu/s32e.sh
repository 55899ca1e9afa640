#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: CTX_CUDA_KV_W alone (k_swiglu_quant16 on):
# a flash4 chunk's launches in Nsight Compute with the switch off and on, then --full --layers 8 (chunks of 16384)
# off and on in ROUNDS alternating rounds.
#   run(command="tar -xJf .out/s4/carry.tar.xz && OUT=$OUT sh tools/gpu/s32e.sh s4 2>&1", carry=[".out/s4"],
#       kind="nvidia-h200", timeout_s=400)
. tools/gpu/lib.sh
gpu_setup "$1"
for v in 0 1; do
    CTX_CUDA_KV_W=$v gpu_ncu_chunk 4096 >/dev/null
    mv "$OUT/chunk_4096.txt" "$OUT/chunk_4096-kvw$v.txt"
    mv "$OUT/ncu_chunk_4096.csv.xz" "$OUT/ncu_chunk_4096-kvw$v.csv.xz"
    echo "ncu, CTX_CUDA_KV_W=$v:"; grep -E "^# |k_q_prep_w" "$OUT/chunk_4096-kvw$v.txt"
done
for r in $(seq 1 ${ROUNDS:-2}); do
    for v in 0 1; do
        CTX_CUDA_KV_W=$v timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 \
            --prefill 65536 --chunk 16384 >"$OUT/full8-kvw$v-r$r.txt" 2>&1
        echo "full --layers 8, CTX_CUDA_KV_W=$v, round $r: exit $?"
        grep -E "^\| 65536 \|" "$OUT/full8-kvw$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-kvw$v-r$r.txt" | tail -3 | cut -c1-60
    done
done
true
