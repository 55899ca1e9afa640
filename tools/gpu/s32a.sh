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
        gpu_shard $sh shard$sh-c$ch --chunk $ch
    done
done
[ -n "${DM:-}" ] && [ -d "$DM" ] && gpu_spec_daemon "$DM"
true
