#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): where a prefill chunk's GPU time goes, kernel by
# kernel. Nsight Compute times every launch (gpu__time_duration, caches and clocks left alone; one at a
# time) of bench-gpu-engine's flash4 prefill of 4096 tokens from position 0 (chunks as the bench cuts
# them), then its first decode steps (-c bounds the launches).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12prof.sh s6 2>&1", carry=[".out/s6"], timeout_s=200)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
t=$(date +%s)
timeout ${NCU_TIMEOUT:-150} "$NCU" --metrics gpu__time_duration.sum --cache-control none --clock-control none \
    --csv --page raw -c ${NCU_COUNT:-700} "$B/bench-gpu-engine" --models flash4 --ctx 4096 --prefill-max 4096 \
    --steps 1 >"$OUT/ncu_prefill.csv" 2>"$OUT/ncu_prefill.err"
echo "ncu prefill: exit $? in $(($(date +%s) - t)) s, $(wc -l <"$OUT/ncu_prefill.csv") lines"
tail -3 "$OUT/ncu_prefill.err"
xz -6 "$OUT/ncu_prefill.csv"
