#!/bin/sh
# The final device call of 2026-11-30's twenty-fourth session (issue 10), on nvidia-h200-x2: bench-gpu-engine
# --full (V4-Flash's 43 layers over both GPUs: decode, the 8K suffix, 131072 tokens pipelined, the 500K
# prefill with its per-stage GPU time); test_engine's parts PARTS (those the single-GPU calls of the session
# did not run), test_multi over both GPUs, compute-sanitizer memcheck on test_engine's memcheck part; then
# (unless NO_8192) the 500K prefill again in chunks of 8192 (--chunk 8192, decode and suffix rows cut short).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s26e.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,clocks.max.sm --format=csv,noheader
t=$(date +%s)
timeout ${FULL_TIMEOUT:-330} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} >"$OUT/full.txt" 2>&1
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
grep -E "^\| (4096|131072|500000) \| 2 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^Pipelined|^\| (0|249856|495904) \|" "$OUT/full.txt"
gpu_test test_engine 200 CTX_ENGINE_PARTS=${PARTS:-topk,long,pdl,c16,afuse,dtc,spec}
gpu_test test_multi 200
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t=$(date +%s)
CTX_ENGINE_PARTS=memcheck timeout 150 "$CS" --tool memcheck "$C/test_engine" >"$OUT/san_memcheck.txt" 2>&1
echo "compute-sanitizer memcheck (test_engine's memcheck part): exit $? in $(($(date +%s) - t)) s"
grep -E "ERROR SUMMARY|^not ok" "$OUT/san_memcheck.txt" | head -3
for f in test_engine test_multi san_memcheck; do xz -6 "$OUT/$f.txt"; done
if [ -z "$NO_8192" ]; then
    t=$(date +%s)
    timeout ${C8_TIMEOUT:-150} "$C/bench-gpu-engine" --full --chunk 8192 --ctx 4096 --steps 4 --suffix 0 >"$OUT/full-8192.txt" 2>&1
    echo "bench-gpu-engine --full --chunk 8192: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| 500000 \||^Pipelined|^\| (0|245760|491520|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full-8192.txt"
fi
