#!/bin/sh
# 2026-11-30 fifteenth session (issue 10), on kind nvidia-h200-x2: what one exchange between the two GPUs
# costs inside a CUDA graph (bench-gpu-p2p: a P2P all-reduce kernel of V4-Flash's and V4-Pro's hidden
# size, and empty kernels for the launch floor), as graphs of 86 kernels (two a layer of Flash's 43) and
# of 1; then test_multi once more on the two devices.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17e.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=200)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt"
nvidia-smi topo -m >>"$OUT/device.txt" 2>&1
for L in 86 1; do
    t0=$(date +%s)
    timeout 60 "$B/bench-gpu-p2p" --layers $L --reps 21 >"$OUT/p2p-$L.txt" 2>&1
    echo "bench-gpu-p2p --layers $L: exit $? in $(($(date +%s) - t0)) s"
    cat "$OUT/p2p-$L.txt"
done
t0=$(date +%s)
timeout 120 "$B/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
