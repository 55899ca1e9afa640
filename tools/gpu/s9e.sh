#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): the decode attention on tensor cores
# (k_attn_dtc + k_attn_combine, ATTN_TC) and the FP4 GEMV V2's opaque table load. test_attn (the new
# kernel against the CPU bound, byte-equal to k_attn_tc on one-run lists), test_gemm, test_engine (every
# part, with the new part dtc), memcheck of test_engine's memcheck part; `bench-gpu fp4`; the decode rows
# with the old attention (CTX_CUDA_FUSE_ATTN=7) and the new (default) in the same call; the prefill rows.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9e.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
TESTS="${TESTS:-test_attn test_gemm test_engine}" BUDGET=300 PREFILL= sh tools/gpu/s8.sh "$B" 2>&1 | grep -v "^ok"
grep -E "decode runs" "$OUT/tests.txt" | cut -c1-220
"$B/bench-gpu" fp4 >"$OUT/bench_fp4.txt" 2>&1
echo "bench-gpu fp4 exit $?"; grep -E "engine S=1" "$OUT/bench_fp4.txt" | grep -E "v2 int8|v1 e4m3" | cut -c1-160
for m in 7 15; do
    t0=$(date +%s)
    { CTX_CUDA_FUSE_ATTN=$m timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
      echo "==== mid"; CTX_CUDA_FUSE_ATTN=$m timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode-attn$m.txt" 2>&1
    echo "(ii) decode CTX_CUDA_FUSE_ATTN=$m in $(($(date +%s) - t0)) s"
    grep -E "^\| (flash4|mid) |^\| +(4096|131072|500000) \| 0\.|^\| attn core|^by layer" "$OUT/decode-attn$m.txt" | cut -c1-200
done
t0=$(date +%s)
timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 4096,131072,500000 >"$OUT/prefill.txt" 2>&1
echo "(iv) prefill exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| [0-9]+ \||Full|full" "$OUT/prefill.txt" | cut -c1-200 | head -12
