#!/bin/sh
# 2026-11-29 twelfth session, the final tree with the FP8 grouped GEMM V7 (issue 10): session6.sh over
# the tree (every GPU test with test_engine's parts PARTS, the prefill tables with the exact / cuBLASLt
# A/B, decode rows, memcheck, bench-gpu if time is left), then the fixture and chunk lines of test_engine.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s14d.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-440} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture: |chunked)|cuda_lt_ctx|cuda_lt_ctx_bf16|rejected|^not ok" "$OUT/tests.txt" | cut -c1-330 | head -40
grep -A8 "^Prefill FP8 products" "$OUT/prefill.txt" | cut -c1-200
grep -E "^\| (V[67]|  *(512|2048|8192) )" "$OUT/kernels.txt" | cut -c1-160
