#!/bin/sh
# A device call of 2026-12-01's thirtieth session (issue 10), on nvidia-h200: the final tree (cu()'s out of device
# memory as CTX_ENOMEM, bench-gpu-engine --full's defaults of chunks of 16384 and --slice): test_engine's PARTS,
# test_multi, then --full --layers 8 with the prefill again in calls of 16384 tokens (--slice).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s3 tests/kernels/test_engine tests/kernels/test_multi \
#       bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s3/carry.tar.xz && OUT=$OUT sh tools/gpu/s32c.sh s3 2>&1", carry=[".out/s3"],
#       kind="nvidia-h200", timeout_s=500)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_engine 300 CTX_ENGINE_PARTS=${PARTS:-mhc,mid,tiny,fixture}
gpu_test test_multi 200
_t=$(date +%s)
timeout 200 "$C/bench-gpu-engine" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 --prefill 65536 --slice 16384 \
    >"$OUT/full8-slice.txt" 2>&1
echo "full --layers 8 --slice 16384: exit $? in $(($(date +%s) - _t)) s"
grep -E "^V4-Flash|^\| (4096 \| 1 \||65536 \|)|^The same prefill" "$OUT/full8-slice.txt" | cut -c1-300
for f in test_engine test_multi; do [ -f "$OUT/$f.txt" ] && xz -6 "$OUT/$f.txt"; done
true
