#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: the session's final tree. test_engine
# (every default part), test_multi, test_spec_daemon against ctxd --backend cuda when the daemon carry is there (DM),
# then both shards of the two-GPU split on the one H200 in turn (--full --layers 22; --first-layer 22 --layers 21;
# bench-gpu-engine's default chunks of 16384), for tools/gpu/pipe_model.py.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s6 tests/kernels/test_engine tests/kernels/test_multi \
#       bench/gpu/bench-gpu-engine
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build-cuda, then
#   run(command="tar -xJf .out/s6/carry.tar.xz && tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz &&
#       OUT=$OUT DM=dm sh tools/gpu/s32f.sh s6 2>&1", carry=[".out/s6", ".out/dm"], kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine ${TEST_TIMEOUT:-330}
gpu_test test_multi 120
if [ -n "${DM:-}" ] && [ -d "$DM" ]; then
    B="$PWD/$DM"
    _t=$(date +%s)
    env LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP \
        CTX_TEST_CTXD_FLAGS="--backend cuda" timeout 150 "$B/t/test_spec_daemon" "$B/ctxd" >"$OUT/spec_daemon.txt" 2>&1
    echo "test_spec_daemon (--backend cuda): exit $? in $(($(date +%s) - _t)) s: $(grep -c '^ok' "$OUT/spec_daemon.txt") ok, $(grep -c '^not ok' "$OUT/spec_daemon.txt") not ok"
    grep -E "^not ok|^# .*(error|Failure)" "$OUT/spec_daemon.txt" | cut -c1-200 | head -8
fi
for sh in ${SHARDS:-0 1}; do
    if [ $sh = 0 ]; then set -- --layers 22; else set -- --first-layer 22 --layers 21; fi
    _t=$(date +%s)
    timeout ${FULL_TIMEOUT:-150} "$C/bench-gpu-engine" --full "$@" --ctx 500000 --steps 4 --suffix 8192 \
        >"$OUT/shard$sh.txt" 2>&1
    echo "shard $sh ($*): exit $? in $(($(date +%s) - _t)) s"
    grep -E "^V4-Flash|^\| (500000) \| 1 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^\| (0|245760|483616) \|" \
        "$OUT/shard$sh.txt" | cut -c1-400
done
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
