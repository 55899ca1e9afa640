#!/bin/sh
# The last device call of 2026-11-29's sixth session (issue 10): decode with this session's paths off
# (CTX_CUDA_FP4_GEMV=1: the old FP4 decode GEMV; CTX_CUDA_IDX_I8=0: k_idx_score_tc1/tc2) for comparison
# in the same run, then session6.sh over the merged tree (every GPU test with test_engine's new "idx"
# part, prefill rows, restore, decode, memcheck, bench-gpu).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final8.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_CUDA_FP4_GEMV=1 CTX_CUDA_IDX_I8=0 timeout 60 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 \
    --profile >"$OUT/decode-old-paths.txt" 2>&1
echo "decode, this session's paths off: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4 |^\| +(4096|131072|500000) \| 0\." "$OUT/decode-old-paths.txt" | cut -c1-200
PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,moe,mhc,afuse} BUDGET=${BUDGET:-500} sh tools/gpu/session6.sh "$B"
