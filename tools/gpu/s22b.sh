#!/bin/sh
# A device call of 2026-11-30's twentieth session (issue 10): the prefill top-k a block a query
# (k_topk_row). test_engine's topk part (every route's bytes against each other and inf_cpu_topk), then
# compute-sanitizer's memcheck and racecheck on k_topk_row launches of that part, then flash4's
# 4096-token chunks at 4K and 500K (bench-gpu-engine --suffix: the indexer rows time both top-k routes
# side by side) with CTX_CUDA_TOPK_ROW=0 (the segments) and 1, alternating.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s22b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
t=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-topk,idx} timeout 200 "$C/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine ${PARTS:-topk,idx}: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|^# mismatch" "$OUT/test_engine.txt" | head -5
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tk in ${SAN_RUNS:-memcheck:0 racecheck:0 racecheck:2 racecheck:3 racecheck:6}; do
    tool=${tk%%:*} skip=${tk#*:}
    t=$(date +%s)
    CTX_ENGINE_PARTS=topk timeout 200 "$CS" --tool $tool --kernel-name kns=k_topk_row --launch-skip $skip \
        --launch-count ${SAN_LAUNCHES:-12} "$C/test_engine" >"$OUT/san_$tool-$skip.txt" 2>&1
    echo "compute-sanitizer $tool (k_topk_row launches from $skip): exit $? in $(($(date +%s) - t)) s"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Internal" "$OUT/san_$tool-$skip.txt" | head -3
done
for r in $(seq ${ROUNDS:-1}); do
    for v in 0 1; do
        t=$(date +%s)
        CTX_CUDA_TOPK_ROW=$v timeout 220 "$C/bench-gpu-engine" --suffix 8192 --ctx 4096,500000 >"$OUT/prefill-row$v-r$r.txt" 2>&1
        echo "flash4 prefill, CTX_CUDA_TOPK_ROW=$v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (1|16|256|2048|4096) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/prefill-row$v-r$r.txt" | cut -d'|' -f2,9-12 | head -6
        grep -E "^\| (4096|131072|500000) \| 4096 \|" "$OUT/prefill-row$v-r$r.txt" | head -3
        grep -E "^\| (4096|500000) \| [0-9.]+ \| [0-9]+ \|" "$OUT/prefill-row$v-r$r.txt" | head -2
    done
done
