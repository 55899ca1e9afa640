#!/bin/sh
# k_attn_tc's warp maps (CTX_CUDA_ATC_MAP 0-3, kernels/engine.cu attn_tc_body): test_attn under each (the
# same bytes by construction: the per-element mma sequences do not change), then flash4's prefill rows.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s10map.sh s6 2>&1", carry=[".out/s6"])
# (Ran on an intermediate tree with the switch; the tree keeps map 1 and has no switch: results/2026-11-29-s10/call7-maps.)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for m in ${MAPS:-0 1 2 3}; do
    CTX_CUDA_ATC_MAP=$m timeout 60 "$B/test_attn" >"$OUT/test_attn-$m.txt" 2>&1
    echo "map $m: test_attn exit $?: $(grep -c '^ok' "$OUT/test_attn-$m.txt") ok, $(grep -c '^not ok' "$OUT/test_attn-$m.txt") not ok; $(grep 'within the bound' "$OUT/test_attn-$m.txt" | md5sum | cut -c1-8) (bound lines' hash)"
    CTX_CUDA_ATC_MAP=$m timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 500000 >"$OUT/prefill-$m.txt" 2>&1
    echo "map $m: bench exit $?"
    grep -E "^\| (4096|131072|500000) \| 2048 \||^Full|^\| 500000 \| [0-9]+\.[0-9]+ \|" "$OUT/prefill-$m.txt" | cut -c1-220
done
