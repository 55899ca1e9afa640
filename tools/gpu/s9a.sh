#!/bin/sh
# First device call of 2026-11-29's seventh session (issue 10): re-run the tests the previous session's
# last refactors touched (test_engine every part, test_idx, test_moe_gemm), then time every kernel of a
# flash4 decode step at 128K: Nsight Systems' in-graph kernel times when nsys is present (the graph's
# nodes traced: the real, PDL-overlapped times), else Nsight Compute's (each kernel alone).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9a.sh s6 2>&1", carry=[".out/s6"], timeout_s=500)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
TESTS="${TESTS:-test_engine test_idx test_moe_gemm}" BUDGET=260 PREFILL= sh tools/gpu/s8.sh "$B" 2>&1 | grep -v "^ok"
NSYS=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda*/nsight-systems*/bin/nsys 2>/dev/null | head -1)
echo "nsys: $NSYS"
if [ -n "$NSYS" ]; then
    t=$(date +%s)
    timeout 150 "$NSYS" profile -t cuda --cuda-graph-trace=node -o "$OUT/dec" -f true \
        "$B/bench-gpu-engine" --models flash4 --ctx 131072 --steps 8 >"$OUT/nsys.log" 2>&1
    echo "nsys exit $? in $(($(date +%s) - t)) s"
    timeout 100 "$NSYS" stats -r cuda_gpu_trace -f csv -o "$OUT/dec" "$OUT/dec.nsys-rep" >>"$OUT/nsys.log" 2>&1
    echo "nsys stats exit $?"; ls -la "$OUT"; tail -5 "$OUT/nsys.log"
    rm -f "$OUT/dec.nsys-rep" "$OUT"/*.sqlite
    xz -9 "$OUT"/dec*.csv 2>/dev/null
else
    FLASH_LAUNCHES=700 MID_LAUNCHES=0 sh tools/gpu/ncu-decode.sh "$B"
    xz -9 "$OUT"/ncu_*.csv
fi
