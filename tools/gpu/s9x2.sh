#!/bin/sh
# The 2-GPU call of 2026-11-29's seventh session (issue 10: "2 GPUs agree with 1", the 2xH200 rows), on
# kind nvidia-h200-x2: test_multi (the layer-split pipeline against one engine bit for bit, shard i on
# device i % 2), bench-gpu-engine --shards 2 (flash4 and mid: the pipeline over 1 shard and over 2
# shards on the two GPUs, decode rows at 4K / 128K / 500K), memcheck of test_multi's tiny part.
# Binaries from tools/gpu/mkcarry6.sh in the flat folder $1.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9x2.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=300)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
nvidia-smi topo -m >>"$OUT/device.txt" 2>&1
grep -E "GPU0|GPU1" "$OUT/device.txt" | head -3
t0=$(date +%s)
timeout 60 "$B/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
grep -E "^not ok|^# devices|2 devices|device 1" "$OUT/test_multi.txt" | cut -c1-240 | head -8
t0=$(date +%s)
timeout 120 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 32 --shards 2 \
    >"$OUT/bench_shards.txt" 2>&1
echo "bench --shards 2 exit $? in $(( $(date +%s) - t0 )) s"
grep -E "^\|.*(flash4|mid)|^#|Layer-split|shard" "$OUT/bench_shards.txt" | cut -c1-240 | head -30
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_MULTI_PARTS=tiny timeout 40 $CS --tool memcheck --error-exitcode 9 "$B/test_multi" >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck (test_multi tiny) exit $? in $(( $(date +%s) - t0 )) s: $(grep -c '^ok' "$OUT/sanitizer.txt") ok, $(grep -c '^not ok' "$OUT/sanitizer.txt") not ok"
    grep -E "ERROR SUMMARY" "$OUT/sanitizer.txt" | head -3
fi
