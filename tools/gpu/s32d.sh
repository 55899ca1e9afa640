#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: prefill's window kv prep a warp a token
# (CTX_CUDA_KV_W) and SwiGLU's quantisation 8 values a lane (CTX_CUDA_SWIGLU16): test_engine's PARTS, then --full
# --layers 8 (chunks of CHUNK, default 16384) with both off and both on in ROUNDS alternating rounds, and a flash4
# chunk's launches in Nsight Compute unless NO_NCU.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s4 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s4/carry.tar.xz && OUT=$OUT sh tools/gpu/s32d.sh s4 2>&1", carry=[".out/s4"],
#       kind="nvidia-h200", timeout_s=500)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-prep,mhc,mid,tiny,moe,fixture}
[ -f "$OUT/test_engine.txt" ] && grep -E "kv warp|swiglu16" "$OUT/test_engine.txt" | cut -c1-220 | head -8
for r in $(seq 1 ${ROUNDS:-2}); do
    for v in 0 1; do
        _t=$(date +%s)
        CTX_CUDA_KV_W=$v CTX_CUDA_SWIGLU16=$v timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 \
            --suffix 4096 --prefill 65536 --chunk ${CHUNK:-16384} >"$OUT/full8-v$v-r$r.txt" 2>&1
        echo "full --layers 8, KV_W = SWIGLU16 = $v, round $r: exit $? in $(($(date +%s) - _t)) s"
        grep -E "^\| (4096 \| 1 \||65536 \|)" "$OUT/full8-v$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-v$v-r$r.txt" | tail -3
    done
done
[ -n "${NO_NCU:-}" ] || { gpu_ncu_chunk 4096 >/dev/null; grep -E "^# |k_q_prep_w|k_swiglu" "$OUT/chunk_4096.txt"; }
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
true
