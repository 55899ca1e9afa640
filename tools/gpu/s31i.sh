#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: the review commit (k_hc_mix and
# k_hc_mixpre's piece values through hcx_piece_red, their fp32 branches in braces; no change of arithmetic):
# test_engine's PARTS and --full --layers 8 once.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s9 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s9/carry.tar.xz && OUT=$OUT sh tools/gpu/s31i.sh s9 2>&1", carry=[".out/s9"],
#       kind="nvidia-h200", timeout_s=400)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-mhc,mid,tiny,spec,pdl,fixture,dtc}
gpu_full8 review "$C/bench-gpu-engine"
[ -f "$OUT/test_engine.txt" ] && xz -6 "$OUT/test_engine.txt"
true
