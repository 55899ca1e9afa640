#!/bin/sh
# Per-kernel GPU time of decode steps (one device call): Nsight Compute times every launch of
# bench-gpu-engine's decode steps (one metric, gpu__time_duration, clocks left alone) for flash4 at
# 128K and mid at 8K (both with filled states: no prefill launches); the raw CSVs come back under $OUT, summarised by tools/gpu/ncu_summary.py.
#   run(command="tar -xJf .out/s4/carry.tar.xz && sh tools/gpu/ncu-decode.sh s4 2>&1",
#       carry=[".out/s4"], timeout_s=400)
# $1: the flat folder holding bench-gpu-engine, test_engine and libcjson.so.1 (stripped copies).
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s4}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
ldd "$C/bench-gpu-engine" | grep "not found"
# Launches: fill / prefill kernels first, then --steps direct steps and --steps graph steps. -c caps
# the launches timed (each is replayed once per metric pass: ~0.1 s per launch).
for spec in "flash4 131072 ${FLASH_LAUNCHES:-900}" "mid 8192 ${MID_LAUNCHES:-1200}"; do
    set -- $spec
    t=$(date +%s)
    timeout ${NCU_TIMEOUT:-200} "$NCU" --clock-control none --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size \
        --csv --page raw -c "$3" "$C/bench-gpu-engine" --models "$1" --ctx "$2" --steps 2 --prefill-max 4096 \
        >"$OUT/ncu_$1.csv" 2>"$OUT/ncu_$1.err"
    echo "ncu $1 $2: exit $? in $(($(date +%s) - t)) s, $(wc -l <"$OUT/ncu_$1.csv") lines"
    tail -3 "$OUT/ncu_$1.err"
done
