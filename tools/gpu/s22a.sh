#!/bin/sh
# A device call of 2026-11-30's twentieth session (issue 10): where the prefill top-k stalls. Nsight
# Compute's full set with the SASS source page on the first k_topk_seg and k_topk_merge launches of one
# flash4 4096-token chunk at 500000 (bench-gpu-engine --suffix 4096 with CTX_BENCH_PROFILE_AT),
# summarised by tools/gpu/ncu_sass.py.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s22a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for kv in ${KERNELS:-seg:k_topk_seg merge:k_topk_merge}; do
    set -- ${kv%%:*} ${kv#*:}
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=${POS:-500000} timeout 240 "$NCU" --profile-from-start off --set full --import-source no \
        -k "regex:$2" -c 1 -o "$OUT/$1" "$C/bench-gpu-engine" --suffix 4096 --ctx ${POS:-500000} >"$OUT/ncu_$1.log" 2>&1
    echo "ncu $1: exit $? in $(($(date +%s) - t)) s"
    "$NCU" -i "$OUT/$1.ncu-rep" --page details --print-details all >"$OUT/details_$1.txt" 2>&1
    "$NCU" -i "$OUT/$1.ncu-rep" --page source --csv --print-source sass >"$OUT/sass_$1.csv" 2>&1
    python3 tools/gpu/ncu_sass.py "$OUT/sass_$1.csv" >"$OUT/sass_$1.txt" 2>&1
    head -60 "$OUT/sass_$1.txt"
    grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Registers Per|Achieved Occ" "$OUT/details_$1.txt" | head -8
    xz -6 "$OUT/sass_$1.csv" "$OUT/details_$1.txt"
    rm -f "$OUT/$1.ncu-rep"
    tail -3 "$OUT/ncu_$1.log"; rm -f "$OUT/ncu_$1.log"
done
