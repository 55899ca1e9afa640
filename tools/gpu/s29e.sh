#!/bin/sh
# The last device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200-x2: bench-gpu-engine --full
# (V4-Flash's 43 layers over both GPUs: decode, the 8K suffix, 131072 tokens pipelined, the 500K prefill) on the
# tree with the compressors' prefill products on cuBLASLt, then test_multi (two GPUs against one engine).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s9 bench/gpu/bench-gpu-engine tests/kernels/test_multi, then
#   run(command="tar -xJf .out/s9/carry.tar.xz && sh tools/gpu/s29e.sh s9 2>&1", carry=[".out/s9"],
#       kind="nvidia-h200-x2", timeout_s=560)
# (Since the thirtieth session --full defaults to chunks of 16384 and, over two GPUs, times the prefill again in
# ctxd's slices (--slice; ~35 s more): FULL_TIMEOUT's default is 420 s.)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
t=$(date +%s)
timeout ${FULL_TIMEOUT:-420} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} >"$OUT/full.txt" 2>&1
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| (4096|131072|500000) \| 2 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^The same prefill|^\| (0|245760|483616|491808) \|" "$OUT/full.txt"
gpu_test test_multi ${MULTI_TIMEOUT:-120}
[ -f "$OUT/test_multi.txt" ] && xz -6 "$OUT/test_multi.txt"
