#!/bin/sh
# 2026-11-29 eleventh session, check of commit 601a3aa's gemm.cu refactor (issue 10): test_gemm (every
# cuda_lt_ctx and cuda_lt_ctx_bf16 case), test_accel, test_engine's fixture part.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s13f.sh s6 2>&1", carry=[".out/s6"], timeout_s=250)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for t in test_gemm test_accel test_engine; do
    t0=$(date +%s)
    CTX_ENGINE_PARTS=fixture timeout 120 "$B/$t" >"$OUT/$t.txt" 2>&1
    echo "$t exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
done
grep -hE "^not ok|cuda_lt_ctx" "$OUT"/test_*.txt | cut -c1-200 | head -20
