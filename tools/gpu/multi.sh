#!/bin/sh
# One device run for the layer-split pipeline (kernels/multi.h), from the repository root:
#   sh tools/gpu/multi.sh (as a copy beside carry.tar.xz: see tools/gpu/README.md)
# The binaries (stripped test_multi, test_engine, bench-gpu-engine, libcjson.so.1) come as
# carry.tar.xz beside this script; logs under $OUT, a summary on stdout.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
HERE=$(dirname "$0")
B=/tmp/mgbin
mkdir -p $B && tar -C $B -xJf "$HERE/carry.tar.xz" || exit 1
export LD_LIBRARY_PATH="$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
nvidia-smi topo -m >>"$OUT/device.txt" 2>&1
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/test_multi" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
ldd "$B/test_multi" | grep "not found" | tee -a "$OUT/device.txt"
t0=$(date +%s)
timeout ${MULTI_TIMEOUT:-50} "$B/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
grep -E "^not ok|^# devices" "$OUT/test_multi.txt" | cut -c1-300
t0=$(date +%s)
timeout ${BENCH_TIMEOUT:-40} "$B/bench-gpu-engine" --models mid,flash4 --ctx 4096 --steps 32 --shards 2 \
    >"$OUT/bench_shards.txt" 2>&1
echo "bench exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^\||^#|Layer-split|V4-Flash" "$OUT/bench_shards.txt" | cut -c1-260
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid timeout ${ENGINE_TIMEOUT:-55} "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok" "$OUT/test_engine.txt" | cut -c1-300
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_MULTI_PARTS=tiny timeout ${SAN_TIMEOUT:-35} $CS --tool memcheck --error-exitcode 9 "$B/test_multi" \
        >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck (test_multi tiny) exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/sanitizer.txt") ok, $(grep -c '^not ok' "$OUT/sanitizer.txt") not ok"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -8 | cut -c1-200
fi
