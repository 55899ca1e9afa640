#!/bin/sh
# 2026-11-29 thirteenth session, the HCA prefill attention on wgmma (k_attn_hwg, issue 10), first call:
# test_attn (k_attn_tc, k_attn_dtc and the new kernel against the CPU's arithmetic), test_engine's wg and
# c16 parts (mid64 against the CPU, chunked prefill, the bf16 cache vs the gather), then the prefill tables
# with the new kernel and with k_attn_tc, one process each: CTX_CUDA_ATTN_WG from MASKS (default "7 0"; the
# first call ran MASKS="1 0" on the first form, whose switch was on / off; s15b.sh: "7 4 0").
#   run(command="tar -xJf .out/s6/carry.tar.xz && MASKS=\"1 0\" sh tools/gpu/s15a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 120 "$B/test_attn" >"$OUT/test_attn.txt" 2>&1
echo "test_attn exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_attn.txt") ok, $(grep -c '^not ok' "$OUT/test_attn.txt") not ok"
grep -E "^not ok|wgmma.*(bound|same bytes|invalid)" "$OUT/test_attn.txt" | cut -c1-200 | head -30
if grep -q "^not ok.*wgmma" "$OUT/test_attn.txt"; then
    echo "the new kernel fails its bound: no benches"
    exit 1
fi
for wg in ${MASKS:-7 0}; do
    t0=$(date +%s)
    CTX_CUDA_ATTN_WG=$wg timeout 110 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-wg$wg.txt" 2>&1
    echo "prefill bench, CTX_CUDA_ATTN_WG=$wg: exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-wg$wg.txt" | cut -c1-260 | head -12
done
t0=$(date +%s)
CTX_ENGINE_PARTS=wg,c16 timeout 200 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine wg,c16 exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|mid64|wg" "$OUT/test_engine.txt" | cut -c1-260 | head -30
