#!/bin/sh
# A device call of 2026-11-30's twenty-second session (issue 10), on nvidia-h200-x2 (call6: a persistent V9,
# not kept, and the staged k_hc_mix4; call7: the final tree). One V4-Flash layer's routed experts
# (bench-gpu moe at MOE_S) with the build's binary and the session start's ($OLD, from 4cf1956), alternating
# ROUNDS times; then bench-gpu-engine --full (V4-Flash's 43 layers over both GPUs: decode, the 8K
# suffix, 131072 tokens pipelined, the 500K prefill with its per-stage GPU time); then the GPU tests.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s24c.sh s6 2>&1", carry=[".out/s6", ".out/old"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
OLD=${OLD:-.out/old/bench-gpu-old} # OLD=none: no A/B
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
if [ -x "$OLD" ]; then
    for r in $(seq ${ROUNDS:-3}); do
        for S in ${MOE_S:-2048 4096}; do
            o=$(timeout 60 "$OLD" moe $S 2>&1 | grep -E '^\| V9' | cut -d'|' -f5 | tr -d ' ')
            n=$(timeout 60 "$C/bench-gpu" moe $S 2>&1 | grep -E '^\| V9' | cut -d'|' -f5 | tr -d ' ')
            echo "round $r, S = $S: V9 at 4cf1956 $o ms, the tree $n ms"
        done
    done | tee "$OUT/moe-ab.txt"
fi
t=$(date +%s)
timeout ${FULL_TIMEOUT:-360} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} 2>&1 | tee "$OUT/full.txt"
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
for tst in ${TESTS:-test_multi test_moe_gemm test_engine}; do
    gpu_test $tst 300
    xz -6 "$OUT/$tst.txt"
done
