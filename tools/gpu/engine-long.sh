#!/bin/sh
# One device run of the CUDA engine's "fast + long context" step (tools/gpu/README.md): the engine
# test (top-k against inf_cpu_topk, fixture, CUDA vs CPU incl. a 100K-position state, graph vs direct
# launches), the flash4 decode benchmark at 4K / 128K / 500K with stage and layer profiles and the
# 43-layer extrapolation, the mid benchmark, then compute-sanitizer memcheck over the test's short
# "memcheck" part. Binaries built on the workstation, carried in the flat folder $1 (stripped copies:
# the working tree and the carry must stay under 64 MiB): test_engine, bench-gpu-engine and
# libcjson.so.1, which the GPU image lacks. Logs under $OUT; a short summary on stdout.
#   sh tools/gpu/engine-long.sh CARRYDIR
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-build-h7a/carry}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/test_engine" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
ldd "$B/test_engine" | grep "not found" | tee -a "$OUT/device.txt"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long} timeout ${TEST_TIMEOUT:-150} "$B/test_engine" \
    >"$OUT/test_engine.txt" 2>&1
echo "test_engine exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|top-k|long context|graph|mismatch" "$OUT/test_engine.txt" | cut -c1-220
t0=$(date +%s)
timeout ${FLASH_TIMEOUT:-100} "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} \
    --steps ${STEPS:-48} --profile >"$OUT/bench_flash4.txt" 2>&1
echo "bench flash4 exit $? in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout ${MID_TIMEOUT:-40} "$B/bench-gpu-engine" --models mid --ctx 4096,16384 --steps 48 --profile \
    >"$OUT/bench_mid.txt" 2>&1
echo "bench mid exit $? in $(( $(date +%s) - t0 )) s"
if [ "${SAN:-1}" = 1 ]; then
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    t0=$(date +%s)
    CTX_ENGINE_PARTS=memcheck timeout ${SAN_TIMEOUT:-60} $CS --tool memcheck --error-exitcode 9 \
        "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck exit $? in $(( $(date +%s) - t0 )) s"
    grep -E "ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -8 | cut -c1-200
fi
grep -v "^#" "$OUT/bench_flash4.txt" | grep -E "^\||floor|Extrap|by layer" | cut -c1-240
grep -E "^\| (mid|stage)|by layer" "$OUT/bench_mid.txt" | cut -c1-200
