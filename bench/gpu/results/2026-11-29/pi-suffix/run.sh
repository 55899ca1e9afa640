#!/bin/sh
# PI's device run (issue 10: the indexer's scores on tensor cores, prefill at long positions):
# test_idx, bench-gpu-engine --suffix 8192, test_engine (fixture,tiny,mid,long), memcheck of test_idx's
# small cases. Binaries built
# on the workstation (build-pi, stripped, xz'd with libcjson.so.1); logs under $OUT.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=/tmp/pi-bin
mkdir -p "$B" && tar xJf .out/wt/pi/carry/carry.tar.xz -C "$B" || exit 1
export LD_LIBRARY_PATH="$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/test_engine" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
ldd "$B/test_engine" | grep "not found" | tee -a "$OUT/device.txt"
t0=$(date +%s)
timeout 35 "$B/test_idx" >"$OUT/test_idx.txt" 2>&1
echo "test_idx exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_idx.txt") ok, $(grep -c '^not ok' "$OUT/test_idx.txt") not ok"
grep -E "ok" "$OUT/test_idx.txt" | cut -c1-330
t0=$(date +%s)
timeout 95 "$B/bench-gpu-engine" --suffix 8192 >"$OUT/bench_suffix.txt" 2>&1
echo "bench --suffix 8192 exit $? in $(( $(date +%s) - t0 )) s"
cat "$OUT/bench_suffix.txt" | cut -c1-400
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid,long timeout 75 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|chunk|long context|bit" "$OUT/test_engine.txt" | cut -c1-220
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t0=$(date +%s)
CTX_IDX_QUICK=1 timeout 25 $CS --tool memcheck --error-exitcode 9 "$B/test_idx" >"$OUT/sanitizer.txt" 2>&1
echo "memcheck test_idx (quick) exit $? in $(( $(date +%s) - t0 )) s"
grep -E "ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -12 | cut -c1-200
