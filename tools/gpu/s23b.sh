#!/bin/sh
# A device call of 2026-11-30's twenty-first session (issue 10), on nvidia-h200-x2: the tree with k_attn_hsw
# (the prefill attention in the seesaw schedule). bench-gpu-engine --full (V4-Flash's
# 43 layers: decode, the 8K suffix, the queueing A/B, the 500K prefill with its per-stage GPU time),
# then the GPU tests (test_multi over both GPUs, test_attn, test_engine).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s23b.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name --format=csv,noheader
t=$(date +%s)
timeout ${FULL_TIMEOUT:-360} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} 2>&1 | tee "$OUT/full.txt"
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
for tst in ${TESTS:-test_multi test_attn test_engine}; do
    t=$(date +%s)
    timeout 300 "$C/$tst" >"$OUT/$tst.txt" 2>&1
    echo "$tst: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/$tst.txt") ok, $(grep -c '^not ok' "$OUT/$tst.txt") not ok"
    grep -E "^not ok" "$OUT/$tst.txt" | head -5
done
