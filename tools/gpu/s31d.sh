#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: the tree's GPU tests after HCX and
# k_hc_pre4q: test_engine with every default part, test_multi, and test_accel (the half whose model the call
# carries: tests/fixtures/v4-tiny-a or models/ctx-small, the tree cannot copy both), then --full --layers 8 once.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s4 tests/kernels/test_engine tests/kernels/test_multi \
#       tests/kernels/test_accel bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s4/carry.tar.xz && OUT=$OUT sh tools/gpu/s31d.sh s4 2>&1", carry=[".out/s4"],
#       kind="nvidia-h200", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
[ -z "$NO_ENGINE" ] && gpu_test test_engine 420
gpu_test test_multi 120
gpu_test test_accel 120
[ -z "$NO_FULL" ] && gpu_full8 final "$C/bench-gpu-engine"
for f in test_engine test_multi test_accel; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
