#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the prefill FP8 products in
# cuBLASLt's rows form (CTX_CUDA_LT_ROWS). test_gemm (the rows form's bound, chunks and refusals beside the
# transposed form's), test_engine's prefill parts (test_lt_rows in mid), --full --layers 8 with the form off / on
# in alternating rounds, Nsight Compute's time of every launch of a flash4 chunk of 4096 with it on (NO_NCU=1
# skips), test_multi last.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s2 tests/kernels/test_gemm tests/kernels/test_engine \
#       tests/kernels/test_multi bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s2/carry.tar.xz && OUT=$OUT sh tools/gpu/s30b.sh s2 2>&1", carry=[".out/s2"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_gemm 200
grep -E "rows form|cuda_lt_ctx max_m" "$OUT/test_gemm.txt" | cut -c1-230
gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-mid,topk,wg,fixture,tiny,long}
grep -E "lt rows" "$OUT/test_engine.txt" | cut -c1-300
for r in ${ROUNDS:-1 2}; do
    gpu_full8 rows0-r$r "$C/bench-gpu-engine" CTX_CUDA_LT_ROWS=0
    gpu_full8 rows1-r$r "$C/bench-gpu-engine" CTX_CUDA_LT_ROWS=1
done
if [ -z "$NO_NCU" ]; then
    gpu_ncu_chunk 4096 >/dev/null
    grep -E "kernel time|k_lt_out|k_lt_rows_f32|k_lt_sat|nvjet|k_topk_row" "$OUT/chunk_4096.txt"
fi
gpu_test test_multi 240
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
[ -f "$OUT/test_multi.txt" ] && xz -6 "$OUT/test_multi.txt"
[ -f "$OUT/test_gemm.txt" ] && xz -6 "$OUT/test_gemm.txt"
