#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the indexer's prefill scores as
# bf16 (k_idx_score_iwg's B16 form, k_topk_row<uint16_t>; CTX_CUDA_IDX_B16) and the MoE bucketing over blocks of
# pairs (CTX_CUDA_MOE_BUCKET). test_idx, test_moe_gemm, test_engine's topk / idx / mid / wg / fixture parts; the
# indexer's tables (bench-gpu-engine --suffix 8192, CTX_BENCH_INDEXER_ONLY); --full --layers 8 with each switch
# off and on.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s3 tests/kernels/test_idx tests/kernels/test_moe_gemm \
#       tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s3/carry.tar.xz && OUT=$OUT sh tools/gpu/s30c.sh s3 2>&1", carry=[".out/s3"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_idx 150
grep -E "bf16 scores" "$OUT/test_idx.txt" | cut -c1-200 | head -4
gpu_test test_moe_gemm 240
grep -E "bucketing kernels give" "$OUT/test_moe_gemm.txt" | cut -c1-200 | head -3
gpu_test test_engine 330 CTX_ENGINE_PARTS=${PARTS:-topk,idx,mid,wg,fixture}
_t=$(date +%s)
CTX_BENCH_INDEXER_ONLY=1 timeout 150 "$C/bench-gpu-engine" --suffix 8192 >"$OUT/indexer.txt" 2>&1
echo "indexer tables: exit $? in $(($(date +%s) - _t)) s"
grep -E "^\| |as floats" "$OUT/indexer.txt" | tail -8
gpu_full8 b16off "$C/bench-gpu-engine" CTX_CUDA_IDX_B16=0
gpu_full8 b16on "$C/bench-gpu-engine" CTX_CUDA_IDX_B16=1
gpu_full8 bucket0 "$C/bench-gpu-engine" CTX_CUDA_MOE_BUCKET=0
for f in test_engine test_idx test_moe_gemm; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
