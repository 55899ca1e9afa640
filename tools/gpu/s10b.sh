#!/bin/sh
# k_topk_fast (one cluster of 8 blocks a query) for prefill chunks: test_engine's part topk with
# CTX_CUDA_TOPK_FAST_S=4096 (every case's cluster path against the segmented one and inf_cpu_topk) and
# the default, then the indexer rows (their top-k column) under both.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s10b.sh s6 2>&1", carry=[".out/s6"])
# (Ran on a tree with a CTX_CUDA_TOPK_FAST_S knob, removed after: the cluster path took 5.37 ms at S = 2048
# against the segmented 2.59; results/2026-11-29-s10/call10-topkfast.)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for f in 4096 8; do
    CTX_CUDA_TOPK_FAST_S=$f CTX_ENGINE_PARTS=topk timeout 90 "$B/test_engine" >"$OUT/topk-$f.txt" 2>&1
    echo "fast_s $f: test_engine topk exit $?: $(grep -c '^ok' "$OUT/topk-$f.txt") ok, $(grep -c '^not ok' "$OUT/topk-$f.txt") not ok"
    grep "^not ok" "$OUT/topk-$f.txt" | cut -c1-200 | head -5
    CTX_CUDA_TOPK_FAST_S=$f timeout 60 "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/prefill-$f.txt" 2>&1
    echo "fast_s $f: bench exit $?"
    grep -E "^\| (1|4|16|256|2048) \||^\| 500000 \| [0-9]+\.[0-9] \|" "$OUT/prefill-$f.txt" | cut -c1-160
done
