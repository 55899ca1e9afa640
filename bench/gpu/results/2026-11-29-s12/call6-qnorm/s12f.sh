#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): cq's RMSNorm inside the GEMVs of one-token
# steps (cuda_fp8_gemv_f32_norm, CTX_CUDA_FUSE_ATTN bit 512): (i) test_engine's parts PARTS (default
# dtc,tiny,mid,long,pdl,idx: bit 512 on and off byte-equal; the default against the CPU engine);
# (iii) flash4 decode, --attn-ab AB (default 63,511,1023: before k_wo_a_ring, before the fused norm,
# the default) in one process; (iv) test_gemm.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12f.sh 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-dtc,tiny,mid,long,pdl,idx} timeout ${TEST_TIMEOUT:-200} "$B/test_engine" >"$OUT/tests.txt" 2>&1
say "(i) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
t0=$(date +%s)
timeout 150 "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-64} \
    --attn-ab ${AB:-63,511,1023} >"$OUT/decode-ab.txt" 2>&1
say "(iii) decode --attn-ab ${AB:-63,511,1023} exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt" | cut -c1-200 | tee -a "$S"
t0=$(date +%s)
timeout 100 "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
say "(iv) test_gemm exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
say "total $(($(date +%s) - T0)) s"
