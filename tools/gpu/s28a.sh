#!/bin/sh
# A device call of 2026-11-30's twenty-sixth session (issue 10): V9's split consumer (its products in column
# parts, each promoted under the later ones; cuda_moe_v9_pipe / CTX_CUDA_MOE9_PIPE). test_moe_gemm (V9 plain and
# split against V7's bytes on every case), compute-sanitizer's synccheck and memcheck on the split form through
# bench-gpu moe 512, the one-layer timings (bench-gpu moe: plain and split alternating), and flash4's
# 4096-token chunk at 4K and 500K with the switch off and on, alternating.
# The split consumer was not kept: the carry was built with bench/gpu/results/2026-11-30-s28/call1-split/v9-split.patch
# applied (it adds cuda_moe_v9_pipe, the CTX_CUDA_MOE9_PIPE switch and their test and bench rows).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s28a.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_moe_gemm 200 && grep "V9" "$OUT/test_moe_gemm.txt" | cut -c1-200 | head -6
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in ${SAN_TOOLS:-synccheck memcheck}; do
    t=$(date +%s)
    CTX_CUDA_MOE9_PIPE=1 CTX_CUDA_MOE_GEMM=9 timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm9 --launch-count 4 \
        "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
    echo "compute-sanitizer $tool (V9 split launches): exit $? in $(($(date +%s) - t)) s"
    grep -E "ERROR SUMMARY|hazard" "$OUT/san_$tool.txt" | head -3
done
for S in ${MOE_S:-2048 4096 8192}; do
    t=$(date +%s)
    timeout 150 "$C/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
    echo "bench-gpu moe $S: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| V[89]" "$OUT/moe-$S.txt"
done
for r in $(seq ${ROUNDS:-2}); do
    for v in 0 1; do
        t=$(date +%s)
        CTX_CUDA_MOE9_PIPE=$v timeout 200 "$C/bench-gpu-engine" --suffix 8192 --ctx 4096,500000 >"$OUT/prefill-pipe$v-r$r.txt" 2>&1
        echo "flash4 prefill, pipe $v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (4096|500000) \| 4096 \|" "$OUT/prefill-pipe$v-r$r.txt" | head -3
        grep -E "^\| (4096|500000) \| [0-9.]+ \| [0-9]+ \|" "$OUT/prefill-pipe$v-r$r.txt" | head -2
    done
done
