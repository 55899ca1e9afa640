#!/bin/sh
# A device call of 2026-11-30's twenty-second session (issue 10), first on a persistent V9 (one CTA an
# SM over the bucketing's lead list; not kept: bench/gpu/results/2026-11-30-s24/call6-full-x2/
# v9-persistent.patch), then on the staged k_hc_mix4. test_moe_gemm (V9 against V7's bytes on every
# case), test_engine's parts PARTS (default moe: a chunk of 800 on V9 against chunks of 50 on V7,
# bit-identical), compute-sanitizer (SAN_TOOLS) on V9's launches in bench-gpu moe 512 or, with
# SAN_KERNEL, on that kernel's launches in test_engine's part SAN_PARTS; the one-layer timings of V7 /
# V8 / V9 (bench-gpu moe at MOE_S), then flash4's 4096-token chunks (bench-gpu-engine --suffix 8192 at
# CTXS) with the wide-chunk kernel forced to each of MOE_AB (CTX_CUDA_MOE_GEMM), ROUNDS times.
# NO_TESTS=1 skips the tests and sanitizers.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s24a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [ -z "$NO_TESTS" ]; then
    gpu_test test_moe_gemm 200
    gpu_test test_engine 240 CTX_ENGINE_PARTS=${PARTS:-moe}
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    for tool in ${SAN_TOOLS:-synccheck memcheck}; do
        t=$(date +%s)
        if [ -n "$SAN_KERNEL" ]; then # SAN_KERNEL's launches in test_engine's part SAN_PARTS
            CTX_ENGINE_PARTS=${SAN_PARTS:-mid} timeout 200 "$CS" --tool $tool --kernel-name kns=$SAN_KERNEL \
                --launch-count ${SAN_COUNT:-4} "$C/test_engine" >"$OUT/san_$tool.txt" 2>&1
        else
            CTX_CUDA_MOE_GEMM=9 timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm9 --launch-count 2 \
                "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
        fi
        echo "compute-sanitizer $tool (${SAN_KERNEL:-moe_gemm9} launches): exit $? in $(($(date +%s) - t)) s"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Internal" "$OUT/san_$tool.txt" | head -3
    done
fi
for S in ${MOE_S:-2048 4096 8192}; do
    t=$(date +%s)
    env ${ENVS:-} timeout 120 "$C/bench-gpu" moe $S >"$OUT/moe-$S.txt" 2>&1
    echo "bench-gpu moe $S: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| V[789]" "$OUT/moe-$S.txt"
done
for r in $(seq ${ROUNDS:-1}); do
    for v in ${MOE_AB:-8 9}; do
        f="$OUT/prefill-v$v-r$r.txt"
        t=$(date +%s)
        env ${ENVS:-} CTX_CUDA_MOE_GEMM=$v timeout 220 "$C/bench-gpu-engine" --suffix 8192 --ctx ${CTXS:-4096,500000} >"$f" 2>&1
        echo "flash4 prefill, V$v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (4096|131072|500000) \| 4096 \|" "$f" | cut -d'|' -f2,3,4,5,9,10 | head -3
        grep -E "^\| (4096|131072|500000) \| [0-9.]+ \| [0-9]+ \|" "$f" | head -3
        grep -E "moe experts" "$f" | head -3
    done
done
