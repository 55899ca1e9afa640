#!/bin/sh
# The second half of 2026-11-29's sixth session (issue 10): the indexer kernels after their block setup
# and head sums became shared helpers (test_idx, test_engine parts idx, tiny, mid, long, memcheck of the
# memcheck part), the prefill rows at 500K, and decode with the shared expert on the side stream (the
# default) and serial (CTX_CUDA_MOE_SIDE=0) now that the routed experts' GEMV is V2.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s8b.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
TESTS="test_idx test_engine" PARTS=idx,tiny,mid,long,topk CTXS=500000 BUDGET=200 sh tools/gpu/s8.sh "$B"
for side in 1 0; do
    t0=$(date +%s)
    CTX_CUDA_MOE_SIDE=$side timeout 60 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 \
        --profile >"$OUT/decode-side-$side.txt" 2>&1
    echo "decode CTX_CUDA_MOE_SIDE=$side: exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| flash4 |^\| moe|^\| +(4096|131072|500000) \| 0\." "$OUT/decode-side-$side.txt" | cut -c1-200
done
