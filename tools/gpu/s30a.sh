#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the tree's test_engine
# (the previous session's review commit had only been compiled; the top-k part with k_topk_row's 32-bit rank
# sort and warp bin walk), cuBLASLt's block-scaled FP8 product with the weights as A (bench-gpu-ltrows: does it
# run, how exact, how fast, against the transposed form), the prefill top-k alone with both sorts, and
# --full --layers 8 with CTX_CUDA_TOPK_R16 0 / 1.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s1 tests/kernels/test_engine bench/gpu/bench-gpu-engine \
#       bench/gpu/bench-gpu-ltrows, then
#   run(command="tar -xJf .out/s1/carry.tar.xz && OUT=$OUT sh tools/gpu/s30a.sh s1 2>&1", carry=[".out/s1"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
_t=$(date +%s)
timeout 120 "$C/bench-gpu-ltrows" 4096 >"$OUT/ltrows-4096.txt" 2>&1
echo "ltrows 4096: exit $? in $(($(date +%s) - _t)) s"
cat "$OUT/ltrows-4096.txt"
_t=$(date +%s)
timeout 120 "$C/bench-gpu-ltrows" 8192 >"$OUT/ltrows-8192.txt" 2>&1
echo "ltrows 8192: exit $? in $(($(date +%s) - _t)) s"
grep -E "wq_b|status|failed" "$OUT/ltrows-8192.txt"
gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-topk,mid,wg,fixture,tiny}
_t=$(date +%s)
CTX_BENCH_INDEXER_ONLY=1 timeout 150 "$C/bench-gpu-engine" --suffix 8192 >"$OUT/indexer.txt" 2>&1
echo "indexer tables: exit $? in $(($(date +%s) - _t)) s"
grep -E "^\| " "$OUT/indexer.txt"
for r in ${ROUNDS:-1}; do
    gpu_full8 r16off-r$r "$C/bench-gpu-engine" CTX_CUDA_TOPK_R16=0
    gpu_full8 r16on-r$r "$C/bench-gpu-engine" CTX_CUDA_TOPK_R16=1
done
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
