#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): the tree's V9 (copies' wait under the
# products, 96fd3b5) through the checks the last session left unrun (test_moe_gemm, test_engine's parts
# PARTS, compute-sanitizer SAN_TOOLS on V9's launches in bench-gpu moe 512, bench-gpu moe at MOE_S), then
# Nsight Compute's time of every launch of one flash4 decode step at 128K (filled state), summarised by
# tools/gpu/ncu_summary.py in launch order. NO_TESTS=1 / NO_NCU=1 skip a half.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [ -z "$NO_TESTS" ]; then
    gpu_test test_moe_gemm 200
    gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-tiny,mid,moe}
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    for tool in ${SAN_TOOLS:-synccheck memcheck}; do
        t=$(date +%s)
        CTX_CUDA_MOE_GEMM=9 timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm9 --launch-count 2 \
            "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
        echo "compute-sanitizer $tool (moe_gemm9 launches): exit $? in $(($(date +%s) - t)) s"
        grep -E "ERROR SUMMARY|hazard|Internal" "$OUT/san_$tool.txt" | head -3
    done
    for S in ${MOE_S:-2048 4096}; do
        t=$(date +%s)
        timeout 120 "$C/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
        echo "bench-gpu moe $S: exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| V[789]" "$OUT/moe-$S.txt"
    done
fi
if [ -z "$NO_NCU" ]; then
    NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size
    t=$(date +%s)
    timeout ${NCU_TIMEOUT:-200} "$NCU" --cache-control none --clock-control none --metrics $M --csv --page raw \
        -c ${DECODE_LAUNCHES:-700} "$C/bench-gpu-engine" --models flash4 --ctx 131072 --steps 2 --prefill-max 0 \
        >"$OUT/ncu_decode.csv" 2>"$OUT/ncu_decode.err"
    echo "ncu decode: exit $? in $(($(date +%s) - t)) s"
    tail -2 "$OUT/ncu_decode.err"
    python3 tools/gpu/ncu_summary.py "$OUT/ncu_decode.csv" >"$OUT/decode_kernels.txt" 2>&1
    python3 tools/gpu/ncu_summary.py "$OUT/ncu_decode.csv" --order >"$OUT/decode_order.txt" 2>&1
    head -40 "$OUT/decode_kernels.txt"
    xz -6 "$OUT/ncu_decode.csv"
fi
