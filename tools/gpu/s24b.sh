#!/bin/sh
# A device call of 2026-11-30's twenty-second session (issue 10): V9's variants side by side, as switches of
# a build with bench/gpu/results/2026-11-30-s24/call4-v9-split-ab/v9-split.patch (not kept). test_moe_gemm
# and test_engine's moe part on the default, then bench-gpu moe at MOE_S for each of VARIANTS (each a
# space-free list NAME=VALUE,NAME=VALUE or "-" for none), ROUNDS times alternating: V9's ms.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s24b.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [ -z "$NO_TESTS" ]; then
    gpu_test test_moe_gemm 200
    gpu_test test_engine 240 CTX_ENGINE_PARTS=moe
fi
for r in $(seq ${ROUNDS:-2}); do
    for v in ${VARIANTS:--}; do
        for S in ${MOE_S:-2048 4096}; do
            ms=$(env $(echo "$v" | tr ',' ' ' | sed 's/^-$//') timeout 60 "$C/bench-gpu" moe $S 2>&1 | tee "$OUT/moe-$S-$(echo $v | tr -c 'A-Za-z0-9\n' _)-r$r.txt" |
                grep -E '^\| V9' | cut -d'|' -f5 | tr -d ' ')
            echo "round $r, $v, S = $S: V9 $ms ms"
        done
    done
done
