#!/bin/sh
# A device call of 2026-11-30's twenty-fifth session (issue 10): the tree's quick checks (test_engine's parts
# PARTS: the review commit 2eaac25 was only compiled), then Nsight Compute's full set on the latency-bound
# kernels of a flash4 decode step at 128K (filled state; the first step's direct launches, layers 0 and 1):
# each launch's details and its SASS stall samples (ncu_sass.py) into $OUT/dec_K.txt.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s27a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
[ -z "$NO_TESTS" ] && gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-tiny,mid,fixture,wg}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
RX=${RX:-"k_attn_dtc|k_attn_combine|k_q_prep|k_hc_mixpre|k_route|k_rmsnorm|k_lin_bf16|fp8_gemv_kernel|fp4_gemv2_kernel|k_wo_a_ring|k_swiglu_quant"}
t=$(date +%s)
timeout 300 "$NCU" --set full --import-source no -k "regex:$RX" -c ${NK:-24} -o "$OUT/dec" \
    "$C/bench-gpu-engine" --models flash4 --ctx 131072 --steps 2 --prefill-max 0 >"$OUT/ncu_dec.log" 2>&1
echo "== ncu decode kernels: exit $? in $(($(date +%s) - t)) s"
tail -3 "$OUT/ncu_dec.log"
"$NCU" -i "$OUT/dec.ncu-rep" --page details --print-details all >"$OUT/dec_details.txt" 2>&1
grep -E "^  [a-zA-Z_].*\(|^    (Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued Instruction|DRAM Throughput|Achieved Occupancy|Registers Per Thread) " \
    "$OUT/dec_details.txt" | head -200
i=0
while [ $i -lt ${NK:-24} ]; do
    "$NCU" -i "$OUT/dec.ncu-rep" --page source --csv --print-source sass --launch-skip $i --launch-count 1 \
        >"$OUT/sass_$i.csv" 2>&1
    python3 tools/gpu/ncu_sass.py "$OUT/sass_$i.csv" >"$OUT/sass_$i.txt" 2>&1
    i=$((i + 1))
done
for i in $(seq 0 $((${NK:-24} - 1))); do echo "== launch $i"; head -1 "$OUT/sass_$i.txt"; done | head -60
tar -C "$OUT" -cJf "$OUT/sass.tar.xz" $(cd "$OUT" && ls sass_*.txt) && rm -f "$OUT"/sass_*
xz -6 "$OUT/dec_details.txt"
rm -f "$OUT/dec.ncu-rep"
