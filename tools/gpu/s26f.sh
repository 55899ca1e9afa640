#!/bin/sh
# The last device call of 2026-11-30's twenty-fourth session (issue 10), on nvidia-h200-x2: the query heads'
# norm and RoPE a lane a 32-value group (q_prep_rows, CTX_CUDA_QPREP_ROWS). test_engine's parts PARTS (wg:
# every prefill form of the session against the form before it, bit for bit), then bench-gpu-engine --full
# --layers 8 on GPU 0 with CTX_CUDA_QPREP_ROWS=0 and =1 alternating, ROUNDS times; then --full (V4-Flash's 43
# layers over both GPUs) and test_multi.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26f.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-wg,tiny,mid,fixture}
for r in $(seq ${ROUNDS:-2}); do
    gpu_full8 rows0-r$r "$C/bench-gpu-engine" CTX_GPUS=0 CTX_CUDA_QPREP_ROWS=0
    gpu_full8 rows1-r$r "$C/bench-gpu-engine" CTX_GPUS=0 CTX_CUDA_QPREP_ROWS=1
done
t=$(date +%s)
timeout ${FULL_TIMEOUT:-330} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} >"$OUT/full.txt" 2>&1
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| (4096|131072|500000) \| 2 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^\| (0|249856|495904) \|" "$OUT/full.txt"
gpu_test test_multi 200
for f in test_engine test_multi; do xz -6 "$OUT/$f.txt"; done
