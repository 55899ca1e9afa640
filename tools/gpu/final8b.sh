#!/bin/sh
# The closing device call of 2026-11-29's sixth session (issue 10): test_engine (every part), test_idx,
# memcheck of test_engine's memcheck part, and the decode rows (flash4 with the 43-layer estimate, mid).
# It ran (results/2026-11-29-final8b) on a tree whose MoE side stream was briefly opt-in; mid's decode
# step came out 1.631 ms against 1.504 with the side stream (-final8), so that default was reverted.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final8b.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
{ timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
  echo "==== mid"; timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode.txt" 2>&1
echo "decode benches in $(($(date +%s) - t0)) s"
grep -E "^\| (flash4|mid) |^\| +(4096|131072|500000) \| 0\." "$OUT/decode.txt" | cut -c1-200
TESTS="test_engine test_idx" PARTS=topk,fixture,tiny,mid,long,pdl,idx,moe,mhc,afuse CTXS=500000 BUDGET=200 sh tools/gpu/s8.sh "$B" |
    grep -v "^ok"
