#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), one H200: test_multi with every shard on
# the one device (the prefill's shard threads sharing a GPU), compute-sanitizer memcheck on its tiny
# part, then the side-by-side with transformers' DeepseekV4 on the tiny fixture and the synthetic mid
# checkpoint (tools/gpu/h7b.sh's "sbs" part, with the time the mid model needs).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20e.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
(
    export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
    t=$(date +%s)
    timeout 150 "$C/test_multi" >"$OUT/test_multi.txt" 2>&1
    echo "test_multi (one GPU): exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
    grep "^not ok" "$OUT/test_multi.txt" | head
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    t=$(date +%s)
    CTX_MULTI_PARTS=tiny timeout 200 "$CS" --tool memcheck "$C/test_multi" >"$OUT/memcheck_multi.txt" 2>&1
    echo "memcheck test_multi tiny: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/memcheck_multi.txt") ok; $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_multi.txt")"
)
mkdir -p hb/bench/gpu && cp "$C/bench-gpu-restore" hb/bench/gpu/ && ln -sfn "$PWD/$C" hb/gpulibs
BUDGET=${BUDGET:-330} sh tools/gpu/h7b.sh hb sbs 2>&1 | tail -40
