#!/bin/sh
# A device call of 2026-11-30's nineteenth session (issue 10): why the long-context prefill kernels run
# where they do. Nsight Compute's full set (throughputs, pipe utilisation, warp stall reasons,
# occupancy) on one launch each of the 500K chunk's heaviest kernels (flash4, one 4096-token chunk after
# a random state of 500000): the HCA attention (k_attn_hwg, the 4th launch: layers swa, swa, csa, hca),
# the indexer's scores and top-k, the routed experts' grouped GEMM; then test_multi on one GPU (the
# shard threads sharing a device).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s21a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
prof() { # name regex skip
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=${P:-500000} timeout 150 "$NCU" --profile-from-start off --set full -k "regex:$2" \
        --launch-skip $3 --launch-count 1 "$C/bench-gpu-engine" --suffix 4096 --ctx ${P:-500000} \
        >"$OUT/ncu_$1.txt" 2>"$OUT/ncu_$1.err"
    echo "ncu $1: exit $? in $(($(date +%s) - t)) s"
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Executed Ipc A" "$OUT/ncu_$1.txt" | head -14
}
prof attn_hca k_attn_hwg 3
prof idx_score k_idx_score_iwg 0
prof topk_seg k_topk_seg 0
prof moe7 moe_gemm7_kernel 0
t=$(date +%s)
timeout 120 "$C/test_multi" >"$OUT/test_multi.txt" 2>&1
echo "test_multi (one GPU): exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_multi.txt") ok, $(grep -c '^not ok' "$OUT/test_multi.txt") not ok"
for f in "$OUT"/ncu_*.txt; do xz -6 "$f"; done
