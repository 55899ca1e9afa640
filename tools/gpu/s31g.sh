#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: the final tree (HCX mode 2 the
# default, k_hc_pre4q, the MTP's bounds over 8 rows): test_engine with every default part, test_multi,
# test_accel (the half whose model the tree carries), --full --layers 8 and Nsight Compute's time of every launch
# of a flash4 chunk of 4096; and --full --layers 8 with chunks of 16384.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine tests/kernels/test_multi \
#       tests/kernels/test_accel bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && OUT=$OUT sh tools/gpu/s31g.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
[ -z "$NO_ENGINE" ] && gpu_test test_engine 420
[ -f "$OUT/test_engine.txt" ] && grep -E "hcx precision, mode|spec: MTP" "$OUT/test_engine.txt" | cut -c1-220
gpu_test test_multi 120
gpu_test test_accel 120
if [ -z "$NO_FULL" ]; then
    gpu_full8 final "$C/bench-gpu-engine"
    _t=$(date +%s) # the same with chunks of 16384 (a lead: fewer, longer chunks)
    timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 --prefill 65536 \
        --chunk 16384 >"$OUT/full8-c16k.txt" 2>&1
    echo "full --layers 8 --chunk 16384: exit $? in $(($(date +%s) - _t)) s"
    grep -E "^\| (65536 \|)" "$OUT/full8-c16k.txt"
    gpu_ncu_chunk 4096 >/dev/null
    grep -E "kernel time|k_hc_" "$OUT/chunk_4096.txt"
fi
rm -f "$OUT/ncu_chunk_4096.err"
for f in test_engine test_multi test_accel; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
