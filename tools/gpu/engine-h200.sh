#!/bin/sh
# The GPU machine's side of one device run of the CUDA engine (kernels/cuda_engine.h): the engine
# test (tests/kernels/test_engine: golden fixture, CUDA vs CPU, state transfer), then the decode
# benchmark (bench/gpu/engine.c); logs under $OUT. Runs the binaries built on the workstation in
# build dir $1 (carried), with the two shared libraries the GPU image lacks carried in $1/gpulibs.
#   sh tools/gpu/engine-h200.sh BUILD [PARTS] [BENCH_ARGS...]
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-build-h5}
PARTS=${2:-fixture,tiny,mid}
shift 2 2>/dev/null || shift $#
export LD_LIBRARY_PATH="$PWD/$B/gpulibs:$LD_LIBRARY_PATH"
export CTX_SOURCE_ROOT="$PWD" CTX_ENGINE_PARTS="$PARTS"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee "$OUT/device.txt"
echo "cpus: $(nproc)" | tee -a "$OUT/device.txt"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/tests/kernels/test_engine" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
ldd "$B/tests/kernels/test_engine" | grep "not found" | tee -a "$OUT/device.txt"
if [ "$PARTS" != "none" ]; then
    timeout ${TEST_TIMEOUT:-300} "$B/tests/kernels/test_engine" 2>&1 | tee "$OUT/test_engine.txt"
fi
if [ "${BENCH:-1}" = 1 ]; then
    timeout ${BENCH_TIMEOUT:-150} "$B/bench/gpu/bench-gpu-engine" "$@" 2>&1 | tee "$OUT/bench_engine.txt"
fi
