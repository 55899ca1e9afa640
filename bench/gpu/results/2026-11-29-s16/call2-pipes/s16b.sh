#!/bin/sh
# 2026-11-29 fourteenth session (issue 10): k_idx_score_iwg's three pipelines (CTX_CUDA_IDX_WG_PIPE 0: two
# groups a pass, two blocks an SM; 1: two groups in flight throughout, one block; 2: four groups a pass,
# one block): test_idx under each (iwg's bits against k_idx_score_i8's), then the indexer and prefill
# tables under each, twice, alternating.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16b.sh s6 2>&1", carry=[".out/s6"], timeout_s=540)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for p in 0 1 2; do
    t0=$(date +%s)
    CTX_CUDA_IDX_WG_PIPE=$p timeout 200 "$B/test_idx" >"$OUT/test_idx-p$p.txt" 2>&1
    echo "test_idx pipe $p: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_idx-p$p.txt") ok, $(grep -c '^not ok' "$OUT/test_idx-p$p.txt") not ok"
    grep -E "^not ok|^# .*differ" "$OUT/test_idx-p$p.txt" | cut -c1-300 | head -6
done
t0=$(date +%s)
CTX_CUDA_IDX_WG_PIPE=1 CTX_ENGINE_PARTS=idx timeout 150 "$B/test_engine" >"$OUT/test_engine_idx-p1.txt" 2>&1
echo "test_engine idx pipe 1: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_idx-p1.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_idx-p1.txt") not ok"
for r in 1 2; do
    for p in 0 1 2; do
        t0=$(date +%s)
        CTX_CUDA_IDX_WG_PIPE=$p timeout 80 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-p$p-$r.txt" 2>&1
        echo "prefill bench pipe $p round $r: exit $? in $(($(date +%s) - t0)) s"
        grep -E "^\| (16|256|2048) \||^\| (500000) \||^Full" "$OUT/prefill-p$p-$r.txt" | cut -c1-200 | head -8
    done
done
