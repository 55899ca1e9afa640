#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), one H200: the decode FP8 GEMV's ring depth
# (CTX_CUDA_GEMV_NS = 4, the kernel until now, 6 and 8). test_gemm at each depth (the same bits), the
# decode GEMV rows of bench-gpu at each, then flash4's decode step at 4K / 128K at each.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20g.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for ns in ${DEPTHS:-4 6 8}; do
    t=$(date +%s)
    CTX_CUDA_GEMV_NS=$ns timeout 120 "$C/test_gemm" >"$OUT/test_gemm_ns$ns.txt" 2>&1
    echo "test_gemm NS=$ns: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_gemm_ns$ns.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm_ns$ns.txt") not ok"
    grep "^not ok" "$OUT/test_gemm_ns$ns.txt" | head -3
done
for ns in ${DEPTHS:-4 6 8}; do
    CTX_CUDA_GEMV_NS=$ns timeout 60 "$C/bench-gpu" decode >"$OUT/gemv_ns$ns.txt" 2>&1
    echo "== bench-gpu decode, NS=$ns (exit $?)"
    grep -E "^\| fp8_gemv" "$OUT/gemv_ns$ns.txt" | awk -F'|' '{printf "%s %s m=%s us_graph=%s GB/s=%s\n", $3, $5, $4, $7, $8}'
done
for ns in ${DEPTHS:-4 6 8}; do
    CTX_CUDA_GEMV_NS=$ns timeout 90 "$C/bench-gpu-engine" --models flash4 --ctx 4096,131072 --steps 48 --prefill-max 0 \
        >"$OUT/engine_ns$ns.txt" 2>&1
    echo "== flash4 decode, NS=$ns (exit $?)"
    grep -E "^\| flash4" "$OUT/engine_ns$ns.txt"
done
