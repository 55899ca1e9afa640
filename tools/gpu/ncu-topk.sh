#!/bin/sh
# Nsight Compute on the decode top-k (k_topk_fast: one query's top 512 of 125,000 indexer scores, a
# cluster of 8 blocks) of bench-gpu-engine's flash4 decode from a filled 500K state (2026-11-29, ninth
# session, issue 10): full sections with source counters (warp stalls by SASS line).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/ncu-topk.sh s6 2>&1", carry=[".out/s6"])
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
t=$(date +%s)
timeout ${NCU_TIMEOUT:-200} "$NCU" --set full --import-source no --kernel-name-base mangled --kernel-name regex:k_topk_fast \
    --launch-skip 2 -c 1 -o "$OUT/topk" "$B/bench-gpu-engine" --models flash4 --ctx ${CTX:-500000} --prefill-max 0 --steps 3 \
    >"$OUT/ncu_run.txt" 2>&1
echo "ncu: exit $? in $(($(date +%s) - t)) s"
"$NCU" --import "$OUT/topk.ncu-rep" --print-details all >"$OUT/topk_details.txt" 2>&1
"$NCU" --import "$OUT/topk.ncu-rep" --page source --csv --print-source sass >"$OUT/topk_sass.csv" 2>&1
xz -6 "$OUT/topk_sass.csv"
grep -E "Duration|Issued|Eligible|Stall|Warp Cycles|Issue Slots|Occupancy|Cluster|Registers|Block Limit" "$OUT/topk_details.txt" | head -60
