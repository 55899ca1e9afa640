#!/bin/sh
# 2026-11-30 sixteenth session (issue 10): the fused FP8 GEMV for two tokens (cuda_fp8_gemv_f32m: a
# speculative step's projections in one launch each) and the decode attention's side streams for two
# tokens. test_gemm (the fused GEMV's m = 2 cases bit-equal to act_quant + GEMV), test_engine's parts
# spec, fixture, tiny, mhc, pdl, afuse, dtc, memcheck, bench-gpu-spec at 4K / 128K / 500K, and flash4's
# plain decode (bench-gpu-engine, graph step) to see the one-token path unchanged.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s18c.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 200 "$B/test_gemm" >"$OUT/test_gemm.txt" 2>&1
echo "test_gemm: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_gemm.txt") ok, $(grep -c '^not ok' "$OUT/test_gemm.txt") not ok"
grep -E "^not ok|fp8_gemv_f32" "$OUT/test_gemm.txt" | cut -c1-260
for p in spec fixture tiny mhc pdl afuse dtc; do
  t0=$(date +%s)
  CTX_ENGINE_PARTS=$p timeout 240 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
  echo "test_engine $p: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
  grep -E "^not ok" "$OUT/test_engine_$p.txt" | cut -c1-300 | head -8
done
grep -E "speculative generation \(|wrong drafts" "$OUT/test_engine_spec.txt" | cut -c1-250
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_ENGINE_PARTS=memcheck timeout 150 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
echo "memcheck exit $? in $(($(date +%s) - t0)) s"
grep -E "^not ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -6 | cut -c1-200
t0=$(date +%s)
timeout 200 "$B/bench-gpu-spec" --ctx 4096,131072,500000 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec: exit $? in $(($(date +%s) - t0)) s"
cat "$OUT/spec.txt"
t0=$(date +%s)
timeout 120 "$B/bench-gpu-engine" --models flash4 --ctx 131072 --steps 48 --profile >"$OUT/decode.txt" 2>&1
echo "bench-gpu-engine flash4 128K: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4|^\|  131072" "$OUT/decode.txt"
