#!/bin/sh
# 2026-11-29 fourteenth session, the final tree (issue 10): what s16e.sh's budget left out of session6.sh
# (its tests took the whole budget): the decode rows (flash4 at 4K / 128K / 500K with the 43-layer
# estimate, mid) and compute-sanitizer memcheck of test_engine's memcheck part, test_gemm and
# test_moe_gemm (quick forms).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s16f.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
{ timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
  echo "==== mid"; timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode.txt" 2>&1
echo "decode benches in $(($(date +%s) - t0)) s"
grep -E "^\| (flash4|mid) |^\| +(4096|131072|500000) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/decode.txt" | cut -c1-220 | head -12
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
{ CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine";
  CTX_TEST_GEMM_QUICK=1 timeout 40 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm";
  CTX_MOE_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm"; } >"$OUT/sanitizer.txt" 2>&1
echo "memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6
