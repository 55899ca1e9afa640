#!/bin/sh
# 2026-11-30 sixteenth session (issue 10): greedy and speculative generation over the layer-split
# pipeline (cuda_multi_generate; the generation loop shared with one engine through kernels/cuda_gen.h).
# test_multi (every part, "spec" new), test_engine's spec, fixture and tiny parts, memcheck of
# test_engine's memcheck part, bench-gpu-spec at 128K (the refactored loop's times).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s18f.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
timeout 200 "$B/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
grep -E "^not ok|spec" "$OUT/test_multi.txt" | cut -c1-260
for p in spec fixture tiny; do
  t0=$(date +%s)
  CTX_ENGINE_PARTS=$p timeout 200 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
  echo "test_engine $p: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
  grep -E "^not ok" "$OUT/test_engine_$p.txt" | cut -c1-300 | head -8
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_ENGINE_PARTS=memcheck timeout 100 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
echo "memcheck exit $? in $(($(date +%s) - t0)) s"
grep -E "^not ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -4 | cut -c1-200
timeout 100 "$B/bench-gpu-spec" --ctx 131072 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec: exit $?"
grep -E "^\| 131072" "$OUT/spec.txt"
