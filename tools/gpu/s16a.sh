#!/bin/sh
# 2026-11-29 fourteenth session (issue 10): k_idx_score_iwg, the indexer's prefill scores on warpgroup MMA.
# test_idx (every case: iwg's bits against k_idx_score_i8's), test_engine's idx part (tc2 / i8 / i8e / iwg
# on mid and mid64i: bit-identical logits and state), compute-sanitizer memcheck and racecheck on
# test_idx's small cases, then the prefill tables with iwg (default) and with CTX_CUDA_IDX_WG=0, twice
# each, alternating.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16a.sh s6 2>&1", carry=[".out/s6"], timeout_s=540)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
t0=$(date +%s)
timeout 200 "$B/test_idx" >"$OUT/test_idx.txt" 2>&1
echo "test_idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_idx.txt") not ok"
grep -E "^not ok|^# .*differ" "$OUT/test_idx.txt" | cut -c1-300 | head -10
t0=$(date +%s)
CTX_ENGINE_PARTS=idx timeout 150 "$B/test_engine" >"$OUT/test_engine_idx.txt" 2>&1
echo "test_engine idx: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_idx.txt") not ok"
grep -E "^not ok" "$OUT/test_engine_idx.txt" | cut -c1-300 | head -10
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
    t0=$(date +%s)
    CTX_IDX_QUICK=1 timeout 90 "$CS" --tool $tool --error-exitcode 9 "$B/test_idx" >"$OUT/idx-$tool.txt" 2>&1
    echo "test_idx quick under $tool: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/idx-$tool.txt") ok, $(grep -c '^not ok' "$OUT/idx-$tool.txt") not ok"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid" "$OUT/idx-$tool.txt" | head -4
done
for r in 1 2; do
    for wg in 1 0; do
        t0=$(date +%s)
        CTX_CUDA_IDX_WG=$wg timeout 80 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-wg$wg-$r.txt" 2>&1
        echo "prefill bench CTX_CUDA_IDX_WG=$wg round $r: exit $? in $(($(date +%s) - t0)) s"
        grep -E "^\| (1|16|256|2048) \||^\| (4096|131072|500000) \||^Full|indexer" "$OUT/prefill-wg$wg-$r.txt" | cut -c1-260 | head -16
    done
done
