#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: both shards of the two-GPU split of
# V4-Flash measured on one H200 each in turn (`--full --layers 22`: layers 0-21, shard 0; `--first-layer 22
# --layers 21`: layers 22-42, shard 1), through the whole 500K prefill, the 8K suffix and decode at 500K, in chunks
# of 8192 and of 16384 (SHARDS / CHUNKS pick; FULL_TIMEOUT each run's limit), then test_spec_daemon against ctxd
# --backend cuda when the daemon carry is there (DM: its folder), for the chunk fallback 16384 -> 8192 -> 4096.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s1 bench/gpu/bench-gpu-engine
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build-cuda, then
#   run(command="tar -xJf .out/s1/carry.tar.xz && tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz &&
#       OUT=$OUT DM=dm sh tools/gpu/s32a.sh s1 2>&1", carry=[".out/s1", ".out/dm"], kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
for ch in ${CHUNKS:-8192 16384}; do
    for sh in ${SHARDS:-0 1}; do
        if [ $sh = 0 ]; then set -- --layers 22; else set -- --first-layer 22 --layers 21; fi
        _t=$(date +%s)
        timeout ${FULL_TIMEOUT:-150} "$C/bench-gpu-engine" --full "$@" --ctx 500000 --steps 4 --suffix 8192 \
            --chunk $ch >"$OUT/shard$sh-c$ch.txt" 2>&1
        echo "shard $sh ($*), chunks of $ch: exit $? in $(($(date +%s) - _t)) s"
        grep -E "^V4-Flash|^\| (500000) \| 1 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^\| (0|245760|491808|483616) \|" \
            "$OUT/shard$sh-c$ch.txt" | cut -c1-400
    done
done
if [ -n "${DM:-}" ] && [ -d "$DM" ]; then
    B="$PWD/$DM"
    _t=$(date +%s)
    env LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP \
        CTX_TEST_CTXD_FLAGS="--backend cuda" timeout 150 "$B/t/test_spec_daemon" "$B/ctxd" >"$OUT/test_spec_daemon.txt" 2>&1
    echo "test_spec_daemon (--backend cuda): exit $? in $(($(date +%s) - _t)) s: $(grep -c '^ok' "$OUT/test_spec_daemon.txt") ok, $(grep -c '^not ok' "$OUT/test_spec_daemon.txt") not ok"
    grep -E "^not ok|^ok|^#" "$OUT/test_spec_daemon.txt" | cut -c1-200 | head -20
fi
true
