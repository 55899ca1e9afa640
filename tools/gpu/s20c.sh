#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), on nvidia-h200-x2: the pipelined prefill
# queued from one host thread a shard (kernels/multi.cu). test_multi over both GPUs (every part:
# pipelined prefills against one engine, bit-identical, from one thread and from one thread a shard),
# then bench-gpu-engine --full (V4-Flash's 43 layers: decode, suffix, the queueing A/B, 500K prefill).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20c.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name --format=csv,noheader
t=$(date +%s)
CTX_MULTI_PARTS=${PARTS:-fixture,tiny,mid,spec} timeout 200 "$C/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
grep -E "^not ok|one host thread" "$OUT/test_multi.txt" | head -20
[ -n "$NO_FULL" ] && exit 0
t=$(date +%s)
timeout ${FULL_TIMEOUT:-360} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} 2>&1 | tee "$OUT/full.txt"
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
