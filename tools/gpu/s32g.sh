#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: the final tree once the kv-warp form was
# taken out again (it slowed k_q_prep_w's query part in either mode: the "q/kv prep" stage 7.5 -> 9.7 / 10.6 ms, calls
# 4-5): test_engine's PARTS, --full --layers 8 with CTX_CUDA_SWIGLU16 off and on (ROUNDS alternating rounds), then
# both shards of the two-GPU split on the one H200 (as s32f.sh) for tools/gpu/pipe_model.py.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && OUT=$OUT sh tools/gpu/s32g.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=500)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-prep,mhc,mid,tiny,moe}
for r in $(seq 1 ${ROUNDS:-1}); do
    for v in 0 1; do
        CTX_CUDA_SWIGLU16=$v timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 \
            --prefill 65536 >"$OUT/full8-sw$v-r$r.txt" 2>&1
        echo "full --layers 8, CTX_CUDA_SWIGLU16=$v, round $r: exit $?"
        grep -E "^\| (4096 \| 1 \||65536 \|)" "$OUT/full8-sw$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-sw$v-r$r.txt" | tail -3 | cut -c1-120
    done
done
for sh in ${SHARDS:-0 1}; do
    gpu_shard $sh shard$sh
done
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
true
