#!/bin/sh
# 2026-11-29 twelfth session, the review's call (issue 10): after moe_gemm.cu's shared pieces (moe_srcs_of,
# moe_promote, moe_store, m3_lut_fill) replaced V3 and V5-V7's copies: test_moe_gemm (every kernel's
# bounds and bytes), bench-gpu moe at S = 2048, test_engine's fixture / tiny / mid / moe parts, test_accel.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s14e.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for t in test_moe_gemm test_engine test_accel; do
    CTX_ENGINE_PARTS=fixture,tiny,mid,moe timeout 150 "$B/$t" >"$OUT/$t.txt" 2>&1
    echo "$t exit $?: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
    grep "^not ok" "$OUT/$t.txt" | cut -c1-200 | head -5
done
timeout 60 "$B/bench-gpu" moe 2048 >"$OUT/moe.txt" 2>&1
grep -E "^\| (V[67]|  *2048 )" "$OUT/moe.txt" | cut -c1-160
