#!/bin/sh
# A device call of 2026-12-01's twenty-eighth session (issue 10), on nvidia-h200: the final tree's test_accel
# (ctxd's accelerator interface over the CUDA engine: chunked prefill, checkpoints, decode) and test_attn.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s8 tests/kernels/test_accel tests/kernels/test_attn, then
#   run(command="tar -xJf .out/s8/carry.tar.xz && OUT=$OUT sh tools/gpu/s30h.sh s8 2>&1", carry=[".out/s8"],
#       kind="nvidia-h200", timeout_s=180)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_accel 90
gpu_test test_attn 60
for f in test_accel test_attn; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
