#!/bin/sh
# 2026-11-29 eleventh session, first call (issue 10): the prefill FP8 products on cuBLASLt
# (cuda_lt_ctx, CTX_CUDA_PREFILL_GEMM) checked and timed. session6.sh over the tree: every GPU test
# (test_gemm's cuda_lt_ctx cases, test_engine's exact-vs-cuBLASLt runs and chunk invariance with the
# new default), the prefill tables (with the exact / cuBLASLt A/B), decode rows, memcheck.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s13a.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-480} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture|chunked)|cuda_lt_ctx|cuBLASLt|^not ok" "$OUT/tests.txt" | cut -c1-300 | head -40
grep -A8 "^Prefill FP8 products" "$OUT/prefill.txt" | cut -c1-200
