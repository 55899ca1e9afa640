#!/bin/sh
# A device call of 2026-11-30's twenty-sixth session (issue 10), on nvidia-h200-x2: the engine's cuBLASLt
# algorithms asked for at m = 4096 (CUDA_LT_HEUR_M, CTX_CUDA_LT_HEUR_M: a change to kernels/gemm.cu that was
# measured and not kept, bench/gpu/results/2026-11-30-s28/README.md) whatever its largest chunk, with chunks of
# 8192 (the new default). test_gemm (its cuda_lt_ctx cases, one of max_m 8192 now), then bench-gpu-engine --full (decode at
# 128K only; the 8K suffix at 128K / 500K, 131072 tokens pipelined, the 500K prefill) with the heuristic at
# max_m (CTX_CUDA_LT_HEUR_M=0, as before) and at 4096, in that order.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s28d.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
gpu_test test_gemm 150 CUDA_VISIBLE_DEVICES=0
grep -E "cuda_lt_ctx|lt ctx|max_m" "$OUT/test_gemm.txt" | cut -c1-200 | head -6
for h in 0 4096; do
    t=$(date +%s)
    CTX_CUDA_LT_HEUR_M=$h timeout 200 "$C/bench-gpu-engine" --full --ctx 131072,500000 --steps 8 >"$OUT/full-heur$h.txt" 2>&1
    echo "bench-gpu-engine --full, CTX_CUDA_LT_HEUR_M=$h: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| (131072|500000) \| 2 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^\| (0|245760|491808) \|" "$OUT/full-heur$h.txt"
done
xz -6 "$OUT/test_gemm.txt"
