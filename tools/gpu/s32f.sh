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
[ -n "${DM:-}" ] && [ -d "$DM" ] && gpu_spec_daemon "$DM"
for sh in ${SHARDS:-0 1}; do
    gpu_shard $sh shard$sh
done
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
