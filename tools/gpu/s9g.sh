#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): the L2 prefetch again, spread over 64 one-warp
# blocks (s9f.sh's single block was limited by one SM's TMA unit), as bulk prefetches
# (CTX_CUDA_L2PF_LINES=0) and as prefetch.global.L2 lines (default), each prefetch bit alone and all, in
# one call; test_engine parts l2pf and memcheck.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9g.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
CTX_ENGINE_PARTS=l2pf,memcheck timeout 100 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine l2pf,memcheck exit $?: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
for cfg in "0 1" "1 1" "2 1" "4 1" "7 1" "2 0" "7 0" "0 0"; do
    set -- $cfg
    t0=$(date +%s)
    CTX_CUDA_L2PF=$1 CTX_CUDA_L2PF_LINES=$2 timeout 60 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 \
        >"$OUT/decode-l2pf$1-lines$2.txt" 2>&1
    echo "(ii) decode CTX_CUDA_L2PF=$1 CTX_CUDA_L2PF_LINES=$2 in $(($(date +%s) - t0)) s"
    grep -E "^\| flash4 " "$OUT/decode-l2pf$1-lines$2.txt" | cut -c1-60
done
