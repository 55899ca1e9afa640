#!/bin/sh
# 2026-11-29 thirteenth session, k_attn_hwg with every block by cp.async (the window from its bf16 copy too),
# the descriptors formed once and the rescale skipped where the running max stayed (issue 10): test_attn,
# test_engine's wg and c16 parts, the prefill tables with CTX_CUDA_ATTN_WG=7 (default) and 0 (k_attn_tc),
# then k_attn_hwg's launches timed by Nsight Compute (ncu_light.csv; the first 4: one 4K chunk's layers).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15e.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 120 "$B/test_attn" >"$OUT/test_attn.txt" 2>&1
echo "test_attn exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_attn.txt") ok, $(grep -c '^not ok' "$OUT/test_attn.txt") not ok"
grep -E "^not ok" "$OUT/test_attn.txt" | cut -c1-250 | head -20
grep -E "wgmma.*(bound|same bytes)" "$OUT/test_attn.txt" | cut -c1-170 | head -24
if grep -q "^not ok.*wgmma" "$OUT/test_attn.txt"; then
    echo "the new kernel fails: no benches"
    exit 1
fi
t0=$(date +%s)
CTX_ENGINE_PARTS=wg,c16 timeout 200 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine wg,c16 exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok" "$OUT/test_engine.txt" | cut -c1-250 | head
for wg in 7 0; do
    t0=$(date +%s)
    CTX_CUDA_ATTN_WG=$wg timeout 110 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-wg$wg.txt" 2>&1
    echo "prefill bench, CTX_CUDA_ATTN_WG=$wg: exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-wg$wg.txt" | cut -c1-260 | head -12
done
sh tools/gpu/hwg_times.sh "$B"
