#!/bin/sh
# A device call of 2026-12-01's thirty-first session (issue 10), on nvidia-h200: the final tree (download_tail
# through the engine's pinned ring, d2h_staged): test_engine's PARTS (d2h, long, tiny, fixture by default),
# test_mark (download_tail on one engine and on the pipeline against full downloads) and test_multi.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s33 tests/kernels/test_engine tests/kernels/test_mark \
#       tests/kernels/test_multi, then
#   run(command="tar -xJf .out/s33/carry.tar.xz && OUT=$OUT sh tools/gpu/s33a.sh s33 2>&1", carry=[".out/s33"],
#       kind="nvidia-h200", timeout_s=500)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-d2h,long,tiny,fixture}
gpu_test test_mark 200
gpu_test test_multi 200
for f in test_engine test_mark test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
