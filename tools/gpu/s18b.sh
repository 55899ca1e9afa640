#!/bin/sh
# 2026-11-30 sixteenth session (issue 10): speculative decoding with the undo record (k_undo) instead of
# marks, the two-token forward as a second graph. test_engine's part "spec", the parts a change of the
# forward's graphs could touch (fixture, tiny, mhc, pdl, afuse), compute-sanitizer memcheck over the
# "memcheck" part (now with a speculative generation), bench-gpu-spec at 4K, 128K and 500K.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s18b.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for p in spec fixture tiny mhc pdl afuse; do
  t0=$(date +%s)
  CTX_ENGINE_PARTS=$p timeout 240 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
  echo "test_engine $p: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
  grep -E "^not ok" "$OUT/test_engine_$p.txt" | cut -c1-300 | head -8
done
grep -E "spec" "$OUT/test_engine_spec.txt" | cut -c1-330
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_ENGINE_PARTS=memcheck timeout 150 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
echo "memcheck exit $? in $(($(date +%s) - t0)) s"
grep -E "^ok|^not ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -12 | cut -c1-200
t0=$(date +%s)
timeout 240 "$B/bench-gpu-spec" --ctx 4096,131072,500000 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec: exit $? in $(($(date +%s) - t0)) s"
cat "$OUT/spec.txt"
