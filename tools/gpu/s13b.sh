#!/bin/sh
# 2026-11-29 eleventh session, second call (issue 10): cuBLASLt's prefill products with the rows padded
# to the granularity its algorithm takes (cuda_lt_ctx_rows): test_gemm (cuda_lt_ctx's bound and chunk
# invariance, with the algorithms described), test_engine fixture/tiny/mid, test_accel, test_multi, the
# prefill tables.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s13b.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for t in test_gemm test_accel test_multi; do
    t0=$(date +%s)
    timeout 150 "$B/$t" >"$OUT/$t.txt" 2>&1
    echo "$t exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
done
grep -E "cuda_lt_ctx|Bail|^not ok|chunk at" "$OUT/test_gemm.txt" | cut -c1-300
grep -E "^not ok" "$OUT/test_accel.txt" "$OUT/test_multi.txt" | cut -c1-200 | head
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid timeout 200 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^# (synthetic|fixture: |chunked)|^not ok|rejected" "$OUT/test_engine.txt" | cut -c1-330
t0=$(date +%s)
timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
echo "prefill bench exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+x|Full|^\(|^\| (131072|500000) \| 0" "$OUT/prefill.txt" | cut -c1-300
