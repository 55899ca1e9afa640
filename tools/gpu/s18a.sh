#!/bin/sh
# 2026-11-30 sixteenth session (issue 10): the MTP block on the GPU and speculative decoding.
# test_engine's part "spec" (the MTP against the CPU and the golden logits, two-token forwards against
# one-token steps, generation plain vs speculative: tokens and state), then the parts a change of the
# forward's logits path could touch (fixture, tiny, mhc), then bench-gpu-spec at 4K and 128K.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s18a.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for p in spec fixture,tiny,mhc; do
  t0=$(date +%s)
  CTX_ENGINE_PARTS=$p timeout 240 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
  echo "test_engine $p: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
  grep -E "^not ok" "$OUT/test_engine_$p.txt" | cut -c1-300 | head -8
done
grep -E "spec" "$OUT/test_engine_spec.txt" | cut -c1-330
t0=$(date +%s)
timeout 200 "$B/bench-gpu-spec" --ctx 4096,131072 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec: exit $? in $(($(date +%s) - t0)) s"
cat "$OUT/spec.txt"
