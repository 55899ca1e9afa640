#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): each decode site's mHC post (and after the
# MoE the combine) done by the next site's k_hc_mixpre (hc_pfuse). test_engine (every part; part mhc
# compares the new path's bits with the earlier launches), memcheck of its memcheck part, then the decode
# rows with the path off (CTX_CUDA_HC_POST=0) and on, in the same call.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9b.sh s6 2>&1", carry=[".out/s6"], timeout_s=420)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
TESTS="${TESTS:-test_engine}" BUDGET=200 PREFILL= sh tools/gpu/s8.sh "$B" 2>&1 | grep -v "^ok"
for m in ${MODES:-0 1}; do
    t0=$(date +%s)
    { CTX_CUDA_HC_POST=$m timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 ${PROFILE:---profile};
      echo "==== mid"; CTX_CUDA_HC_POST=$m timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode-post$m.txt" 2>&1
    echo "(ii) decode CTX_CUDA_HC_POST=$m in $(($(date +%s) - t0)) s"
    grep -E "^\| (flash4|mid) |^\| +(4096|131072|500000) \| 0\.|^\| mhc|^\| moe combine" "$OUT/decode-post$m.txt" | cut -c1-200
done
