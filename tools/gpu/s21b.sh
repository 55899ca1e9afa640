#!/bin/sh
# A device call of 2026-11-30's nineteenth session (issue 10): the routed experts' grouped GEMM V9 (V8
# with a producer warpgroup). test_moe_gemm (V9 against V7's bytes on every case), compute-sanitizer's
# synccheck and memcheck on a V4-Flash-shaped call through bench-gpu moe 512, the one-layer timings of
# V7 / V8 / V9 (bench-gpu moe 2048 / 4096 / 8192), and flash4's 4096-token chunk at 4K and 500K with the
# engine's wide-chunk kernel forced to V8 and to V9 (CTX_CUDA_MOE_GEMM), alternating.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s21b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
t=$(date +%s)
timeout 200 "$C/test_moe_gemm" >"$OUT/test_moe_gemm.txt" 2>&1
echo "test_moe_gemm: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_moe_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_moe_gemm.txt") not ok"
grep "^not ok" "$OUT/test_moe_gemm.txt" | head -5
grep "V9" "$OUT/test_moe_gemm.txt" | head -4
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in ${SAN_TOOLS:-synccheck memcheck}; do
    t=$(date +%s)
    CTX_CUDA_MOE_GEMM=9 timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm9 --launch-count 2 \
        "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
    echo "compute-sanitizer $tool (V9 launches): exit $? in $(($(date +%s) - t)) s"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT/san_$tool.txt" | head -3
done
for S in ${MOE_S:-2048 4096 8192}; do
    t=$(date +%s)
    timeout 120 "$C/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
    echo "bench-gpu moe $S: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| V[789]" "$OUT/moe-$S.txt"
done
for r in $(seq ${ROUNDS:-2}); do
    for v in 8 9; do
        t=$(date +%s)
        CTX_CUDA_MOE_GEMM=$v timeout 200 "$C/bench-gpu-engine" --suffix 8192 --ctx 4096,500000 >"$OUT/prefill-v$v-r$r.txt" 2>&1
        echo "flash4 prefill, V$v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (4096|131072|500000) \| 4096 \|" "$OUT/prefill-v$v-r$r.txt" | head -3
        grep -E "^\| (4096|500000) \| [0-9.]+ \| [0-9]+ \|" "$OUT/prefill-v$v-r$r.txt" | head -2
    done
done
