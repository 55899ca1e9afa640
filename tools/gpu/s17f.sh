#!/bin/sh
# 2026-11-30 fifteenth session (issue 10), the second review: the routed experts' kernels V5-V8 copy a
# stage's weight pieces before its activation pieces (one order for all; registers unchanged), and the
# engine's max_chunk check asks the bucketing (cuda_moe_buckets_fit) instead of repeating its tile count.
# s17d.sh's checks (test_moe_gemm, test_engine's moe part, memcheck, bench-gpu moe 2048 and 4096), then
# test_engine's fixture part (the max_chunk refusal among its lines).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17f.sh s6 2>&1", carry=[".out/s6"], timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
OUT="$OUT" sh tools/gpu/s17d.sh "$B"
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture timeout 150 "$B/test_engine" >"$OUT/test_engine_fixture.txt" 2>&1
echo "test_engine fixture: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine_fixture.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_fixture.txt") not ok"
grep -E "^not ok|max_chunk" "$OUT/test_engine_fixture.txt" | cut -c1-250 | head -5
