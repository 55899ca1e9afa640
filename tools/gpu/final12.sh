#!/bin/sh
# The closing device call of 2026-11-29's tenth session (issue 10): the decode rows with this session's
# decode change off (CTX_CUDA_FUSE_ATTN=63: k_wo_a_mma, the tree before) and the default (511) in one
# process (bench-gpu-engine --attn-ab 63,511, alternating rounds), then session6.sh over the tree (every
# GPU test with test_engine's parts PARTS, prefill rows, decode rows with --profile, memcheck, bench-gpu
# if time is left; RESTORE=0: the restore path did not change this session).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final12.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 90 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --attn-ab 63,511 \
    >"$OUT/decode-ab.txt" 2>&1
echo "decode, --attn-ab 63,511: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt" | cut -c1-220
RESTORE=${RESTORE:-0} PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-420} \
    sh tools/gpu/session6.sh "$B"
