#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: test_engine's spec part (the MTP
# block against the CPU's over 8 rows, spec_mtp_rows) with the mHC mixes' fp32 form (CTX_CUDA_HC_MMA=0) and HCX
# (2, the default).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s6 tests/kernels/test_engine, then
#   run(command="tar -xJf .out/s6/carry.tar.xz && OUT=$OUT sh tools/gpu/s31f.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200", timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
for m in 0 2; do
    gpu_test test_engine 200 CTX_ENGINE_PARTS=${PARTS:-spec} CTX_CUDA_HC_MMA=$m
    grep -E "spec: MTP" "$OUT/test_engine.txt" | cut -c1-260
    mv "$OUT/test_engine.txt" "$OUT/test_engine-m$m.txt"
done
xz -6 "$OUT"/test_engine-m*.txt
true
