#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10): where the GPU time of one 4096-token
# prefill chunk (flash4, after a random state at 4096 and at 500000) and of one decode step (flash4 at
# 128K) goes, kernel by kernel: Nsight Compute's duration and DRAM bytes of every launch, one at a
# time (caches and clocks left alone), summarised by tools/gpu/ncu_chunk.py.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size
for P in ${POSITIONS:-4096 500000}; do
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$P timeout ${NCU_TIMEOUT:-200} "$NCU" --profile-from-start off --cache-control none \
        --clock-control none --metrics $M --csv --page raw "$C/bench-gpu-engine" --suffix 4096 --ctx $P \
        >"$OUT/ncu_chunk_$P.csv" 2>"$OUT/ncu_chunk_$P.err"
    echo "ncu chunk at $P: exit $? in $(($(date +%s) - t)) s"
    tail -2 "$OUT/ncu_chunk_$P.err"
    python3 tools/gpu/ncu_chunk.py "$OUT/ncu_chunk_$P.csv" | tee "$OUT/chunk_$P.txt" | head -45
    xz -6 "$OUT/ncu_chunk_$P.csv"
done
t=$(date +%s)
timeout ${NCU_TIMEOUT:-200} "$NCU" --cache-control none --clock-control none --metrics $M --csv --page raw \
    -c ${DECODE_LAUNCHES:-700} "$C/bench-gpu-engine" --models flash4 --ctx 131072 --steps 2 --prefill-max 0 \
    >"$OUT/ncu_decode.csv" 2>"$OUT/ncu_decode.err"
echo "ncu decode: exit $? in $(($(date +%s) - t)) s"
python3 tools/gpu/ncu_summary.py "$OUT/ncu_decode.csv" --order >"$OUT/decode_order.txt" 2>&1
head -5 "$OUT/decode_order.txt"
xz -6 "$OUT/ncu_decode.csv"
# --full's rows on one GPU with V4-Flash's first 8 layers (the mode itself checked before a 2-GPU call)
timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096,131072 --steps 8 --prefill 65536 2>&1 | tee "$OUT/full8.txt"
