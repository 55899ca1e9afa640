#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): the L2 prefetch of a decode site's next weights
# (k_l2_prefetch on a forked stream; CTX_CUDA_L2PF bits 1 wq_b, 2 wo_a, 4 the shared expert) and k_wo_a_mma's
# prefetch of its second wave (CTX_CUDA_WOA_PF). test_engine (every part; part l2pf: every mode
# bit-identical), memcheck of its memcheck part, then the flash4 decode rows for each setting in one call.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9f.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
TESTS="${TESTS:-test_engine test_wo}" BUDGET=300 PREFILL= sh tools/gpu/s8.sh "$B" 2>&1 | grep -v "^ok"
grep -E "^ok.*l2pf" "$OUT/tests.txt" | cut -c1-200 | head -4
for cfg in "0 0" "0 1" "1 1" "2 1" "4 1" "7 1" "7 0"; do
    set -- $cfg
    t0=$(date +%s)
    CTX_CUDA_L2PF=$1 CTX_CUDA_WOA_PF=$2 timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 \
        ${PROF:---profile} >"$OUT/decode-l2pf$1-woa$2.txt" 2>&1
    echo "(ii) decode CTX_CUDA_L2PF=$1 CTX_CUDA_WOA_PF=$2 in $(($(date +%s) - t0)) s"
    grep -E "^\| flash4 |^\| +(4096|131072|500000) \| 0\.|^\| attn (projections|out)|^\| moe experts" "$OUT/decode-l2pf$1-woa$2.txt" | cut -c1-130
done
