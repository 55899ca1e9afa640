#!/bin/sh
# The last device call of 2026-11-30's twenty-fifth session (issue 10), on nvidia-h200-x2: test_engine's parts
# PARTS on GPU 0 (those the session's earlier calls did not run), bench-gpu-engine --full (V4-Flash's 43 layers
# over both GPUs: decode, the 8K suffix, 131072 tokens pipelined, the 500K prefill), then test_multi.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27c.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_engine 200 CUDA_VISIBLE_DEVICES=0 CTX_ENGINE_PARTS=${PARTS:-fixture,pdl,spec,moe,mhc}
t=$(date +%s)
timeout ${FULL_TIMEOUT:-340} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} >"$OUT/full.txt" 2>&1
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| (4096|131072|500000) \| 2 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^\| (0|249856|495904) \|" "$OUT/full.txt"
[ -z "$NO_TESTS" ] && gpu_test test_multi 150
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
