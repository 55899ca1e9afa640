#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: k_hc_postmixt (a prefill site's mHC post
# and the next site's mixes in one launch, CTX_CUDA_HC_POSTMIX): test_engine's PARTS, then --full --layers 8 (chunks of
# CHUNK, default 16384) with the switch off and on in ROUNDS alternating rounds, a flash4 chunk's launches in Nsight
# Compute unless NO_NCU, and test_spec_daemon against ctxd --backend cuda when the daemon carry is there (DM).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s2 tests/kernels/test_engine bench/gpu/bench-gpu-engine
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build-cuda, then
#   run(command="tar -xJf .out/s2/carry.tar.xz && tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz &&
#       OUT=$OUT DM=dm sh tools/gpu/s32b.sh s2 2>&1", carry=[".out/s2", ".out/dm"], kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-mhc,mid,tiny,fixture,spec}
[ -f "$OUT/test_engine.txt" ] && grep -E "postmix|cp_check|chunk" "$OUT/test_engine.txt" | head -12
for r in $(seq 1 ${ROUNDS:-2}); do
    for v in 0 1; do
        _t=$(date +%s)
        CTX_CUDA_HC_POSTMIX=$v timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 \
            --prefill 65536 --chunk ${CHUNK:-16384} >"$OUT/full8-pm$v-r$r.txt" 2>&1
        echo "full --layers 8, CTX_CUDA_HC_POSTMIX=$v, round $r: exit $? in $(($(date +%s) - _t)) s"
        grep -E "^\| (4096 \| 1 \||65536 \|)" "$OUT/full8-pm$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-pm$v-r$r.txt" | tail -3
    done
done
[ -n "${NO_NCU:-}" ] || gpu_ncu_chunk 4096
[ -n "${DM:-}" ] && [ -d "$DM" ] && gpu_spec_daemon "$DM"
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
true
