#!/bin/sh
# A device call of 2026-11-30's twentieth session (issue 10): the tree's GPU tests (test_engine every part,
# test_gemm, test_idx), memcheck of k_topk_row launches, then flash4's chunks at 4K and 500K
# (bench-gpu-engine --suffix 8192) with both top-k routes.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s22d.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for tb in ${TESTS:-test_engine test_gemm test_idx}; do
    t=$(date +%s)
    timeout 300 "$C/$tb" >"$OUT/$tb.txt" 2>&1
    echo "$tb: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/$tb.txt") ok, $(grep -c '^not ok' "$OUT/$tb.txt") not ok"
    grep -E "^not ok" "$OUT/$tb.txt" | head -5
    xz -6 "$OUT/$tb.txt"
done
PARTS=topk SAN_RUNS="memcheck:0" SAN_LAUNCHES=40 ROUNDS=${ROUNDS:-1} sh tools/gpu/s22b.sh "$C" | grep -v "^test_engine"
