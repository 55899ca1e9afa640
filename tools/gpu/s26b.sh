#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): the prefill forms of this session
# (k_hc_mix4 two tokens a thread, CTX_CUDA_HCM2; wq_b into bf16 q16, CTX_CUDA_Q16_IN). test_engine's parts
# PARTS (wg: the forms against the old ones, bit for bit; tiny, mid: cp_check against the decode kernels);
# bench-gpu-engine --full --layers 8 on one GPU with both forms off, then on (ROUNDS times); Nsight Compute
# on every launch of one flash4 chunk at 4096 (ncu_chunk.py); then NCU_KERNELS (name:regex ...) with the
# full set and the SASS stall samples (ncu_sass.py) in one flash4 chunk at NCU_AT (default 500000).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-wg,tiny,mid}
for r in $(seq ${ROUNDS:-1}); do
    for v in off on; do
        if [ $v = off ]; then E="CTX_CUDA_HCM2=0 CTX_CUDA_Q16_IN=0"; else E="CTX_CUDA_HCM2=1"; fi
        t=$(date +%s)
        env $E timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 --prefill 65536 \
            >"$OUT/full8-$v-r$r.txt" 2>&1
        echo "full --layers 8, forms $v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| 65536 \|" "$OUT/full8-$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-$v-r$r.txt" | tail -3
    done
done
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size
for P in ${POSITIONS:-4096}; do
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$P timeout 200 "$NCU" --profile-from-start off --cache-control none --clock-control none \
        --metrics $M --csv --page raw "$C/bench-gpu-engine" --suffix 4096 --ctx $P >"$OUT/ncu_chunk_$P.csv" 2>"$OUT/ncu_chunk_$P.err"
    echo "ncu chunk at $P: exit $? in $(($(date +%s) - t)) s"
    python3 tools/gpu/ncu_chunk.py "$OUT/ncu_chunk_$P.csv" >"$OUT/chunk_$P.txt" 2>&1
    head -40 "$OUT/chunk_$P.txt"
    xz -6 "$OUT/ncu_chunk_$P.csv"
done
for kv in ${NCU_KERNELS:-csa:k_attn_hsw<0> mix:k_hc_mix4}; do
    set -- ${kv%%:*} ${kv#*:}
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=${NCU_AT:-500000} timeout 200 "$NCU" --profile-from-start off --set full --import-source no \
        -k "regex:$2" -c 1 -o "$OUT/$1" "$C/bench-gpu-engine" --suffix 4096 --ctx ${NCU_AT:-500000} >"$OUT/ncu_$1.log" 2>&1
    echo "ncu $1 ($2): exit $? in $(($(date +%s) - t)) s"
    "$NCU" -i "$OUT/$1.ncu-rep" --page details --print-details all >"$OUT/details_$1.txt" 2>&1
    "$NCU" -i "$OUT/$1.ncu-rep" --page source --csv --print-source sass >"$OUT/sass_$1.csv" 2>&1
    python3 tools/gpu/ncu_sass.py "$OUT/sass_$1.csv" >"$OUT/sass_$1.txt" 2>&1
    head -30 "$OUT/sass_$1.txt"
    grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Memory Throughput|L2 Hit|Achieved Occupancy|Registers Per" "$OUT/details_$1.txt" | head -12
    rm -f "$OUT/$1.ncu-rep" "$OUT/ncu_$1.log" "$OUT/sass_$1.csv"
done
