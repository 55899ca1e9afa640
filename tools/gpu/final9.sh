#!/bin/sh
# The closing device call of 2026-11-29's seventh session (issue 10): decode with this session's paths
# off (CTX_CUDA_FUSE_ATTN=7: k_attn_score / k_attn_pv instead of k_attn_dtc; CTX_CUDA_HC_POST=0: every mHC
# post and MoE combine its own launch) for comparison in the same run, then session6.sh over the tree
# (every GPU test, test_engine with parts dtc and mhc, prefill rows, decode rows, memcheck, bench-gpu if
# time is left; RESTORE=0: the restore path did not change this session).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final9.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_CUDA_FUSE_ATTN=7 CTX_CUDA_HC_POST=0 timeout 60 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 \
    --steps 48 --profile >"$OUT/decode-old-paths.txt" 2>&1
echo "decode, this session's paths off: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4 |^\| +(4096|131072|500000) \| 0\." "$OUT/decode-old-paths.txt" | cut -c1-200
RESTORE=${RESTORE:-0} PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-480} \
    sh tools/gpu/session6.sh "$B"
