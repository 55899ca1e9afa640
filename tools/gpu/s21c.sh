#!/bin/sh
# A device call of 2026-11-30's nineteenth session (issue 10): where the routed experts' grouped GEMM
# stalls, instruction by instruction. Nsight Compute's full set with the SASS source page (warp stall
# samples per instruction) on the first launch of V8 (moe_gemm7_kernel<128>) and of V9 in bench-gpu moe
# 4096, summarised by tools/gpu/ncu_sass.py; then V9's synccheck and memcheck.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s21c.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for kv in ${KERNELS:-v8:moe_gemm7_kernel<128> v9:moe_gemm9}; do
    set -- ${kv%%:*} ${kv#*:}
    t=$(date +%s)
    timeout 200 "$NCU" --set full --import-source no -k "regex:$2" -c 1 -o "$OUT/$1" "$C/bench-gpu" moe ${MOE_S:-4096} \
        >"$OUT/ncu_$1.log" 2>&1
    echo "ncu $1: exit $? in $(($(date +%s) - t)) s"
    "$NCU" -i "$OUT/$1.ncu-rep" --page details --print-details all >"$OUT/details_$1.txt" 2>&1
    "$NCU" -i "$OUT/$1.ncu-rep" --page source --csv --print-source sass >"$OUT/sass_$1.csv" 2>&1
    python3 tools/gpu/ncu_sass.py "$OUT/sass_$1.csv" >"$OUT/sass_$1.txt" 2>&1
    head -45 "$OUT/sass_$1.txt"
    grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" "$OUT/details_$1.txt" | head -4
    xz -6 "$OUT/sass_$1.csv"
    rm -f "$OUT/$1.ncu-rep" "$OUT/ncu_$1.log"
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in ${SAN_TOOLS:-synccheck memcheck}; do
    t=$(date +%s)
    timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm9 --launch-count 2 "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
    echo "compute-sanitizer $tool (V9 launches): exit $? in $(($(date +%s) - t)) s"
    grep -E "ERROR SUMMARY" "$OUT/san_$tool.txt" | head -2
done
