#!/bin/sh
# 2026-11-29 fourteenth session (issue 10): the prefill top-k's run read by four 16-byte loads and the
# segments' candidate scores from their keys: test_engine's topk and idx parts (the same order as
# inf_cpu_topk on every case), test_idx, then the prefill tables twice.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16d.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_ENGINE_PARTS=topk,idx timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine topk,idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok" "$OUT/test_engine.txt" | cut -c1-300 | head -10
t0=$(date +%s)
timeout 200 "$B/test_idx" >"$OUT/test_idx.txt" 2>&1
echo "test_idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_idx.txt") not ok"
for r in 1 2; do
    t0=$(date +%s)
    timeout 80 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-$r.txt" 2>&1
    echo "prefill bench round $r: exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| (16|256|2048) \||^\| (131072|500000) \||^Full" "$OUT/prefill-$r.txt" | cut -c1-250 | head -12
done
