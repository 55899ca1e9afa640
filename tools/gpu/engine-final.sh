#!/bin/sh
# One device run that checks and measures everything of the CUDA engine (tools/gpu/README.md): the
# engine test and the 4K-context benchmark with its stage profile (engine-h200.sh), compute-sanitizer
# memcheck and racecheck over the test's short "memcheck" part, then the benchmark at 16K context.
OUT=${OUT:-/tmp/out}
B=${1:-build-h5}
TEST_TIMEOUT=150 BENCH_TIMEOUT=80 sh tools/gpu/engine-h200.sh "$B" fixture,tiny,mid --profile >"$OUT/main.txt" 2>&1
grep -v "^# fixture case [0-9] (P" "$OUT/main.txt"
export LD_LIBRARY_PATH="$PWD/$B/gpulibs:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" CTX_ENGINE_PARTS=memcheck
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
    timeout 50 $CS --tool $tool --error-exitcode 9 "$B/tests/kernels/test_engine" >"/tmp/san_$tool.txt" 2>&1
    rc=$?
    tail -6 "/tmp/san_$tool.txt"
    echo "$tool exit $rc"
done | tee "$OUT/sanitizer.txt"
timeout 50 "$B/bench/gpu/bench-gpu-engine" --models mid,flash4 --ctx 16384 --steps 32 2>&1 | tee "$OUT/bench_16k.txt"
