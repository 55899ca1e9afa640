#!/bin/sh
# A device call of 2026-11-29's ninth session (issue 10): where a decode step's GPU time goes, kernel by
# kernel. Nsight Compute times every launch (gpu__time_duration, caches and clocks left alone) of
# bench-gpu-engine's flash4 decode from a filled 128K state (direct launches, one at a time: PDL overlap
# removed, so the sum is the "kernels back to back" figure of --profile); cuobjdump keeps the SASS of the
# engine's kernels for reading here.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s11prof.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
OBJ=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
echo "ncu: $NCU cuobjdump: $OBJ"
t=$(date +%s)
timeout ${NCU_TIMEOUT:-240} "$NCU" --metrics gpu__time_duration.sum --cache-control none --clock-control none \
    --csv --page raw -c ${NCU_COUNT:-900} "$B/bench-gpu-engine" --models flash4 --ctx 131072 --prefill-max 0 --steps 3 \
    >"$OUT/ncu_decode.csv" 2>"$OUT/ncu_decode.err"
echo "ncu decode: exit $? in $(($(date +%s) - t)) s, $(wc -l <"$OUT/ncu_decode.csv") lines"
tail -5 "$OUT/ncu_decode.err"
t=$(date +%s)
"$OBJ" -sass "$B/bench-gpu-engine" 2>&1 | xz -6 >"$OUT/sass.txt.xz"
echo "sass: $(($(date +%s) - t)) s, $(ls -la "$OUT/sass.txt.xz" | awk '{print $5}') bytes"
