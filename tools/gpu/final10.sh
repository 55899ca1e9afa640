#!/bin/sh
# The closing device call of 2026-11-29's eighth session (issue 10): the prefill rows with this session's
# switchable paths off (CTX_CUDA_IDX_I8E=0: k_idx_score_i8 instead of k_idx_score_i8e; CTX_CUDA_ATTN_C16=0:
# the HCA layers' fp32 gather instead of the bf16 cache by cp.async; the top-k's 8-bit digits and
# 16K segments and k_attn_tc's 32-head score tiles have no switch) for comparison in the same run, then
# session6.sh over the tree (every GPU test, test_engine with parts idx and c16, prefill rows, decode
# rows, memcheck, bench-gpu if time is left; RESTORE=0: the restore path did not change this session).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final10.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_CUDA_IDX_I8E=0 CTX_CUDA_ATTN_C16=0 timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 \
    >"$OUT/prefill-old-paths.txt" 2>&1
echo "prefill, this session's switches off: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (4096|131072|500000) \| [0-9]+\.[0-9] \||^Full|^\| (131072|500000) \| 0\." "$OUT/prefill-old-paths.txt" | cut -c1-200
RESTORE=${RESTORE:-0} PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-480} \
    sh tools/gpu/session6.sh "$B"
