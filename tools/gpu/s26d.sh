#!/bin/sh
# A device call of 2026-11-30's twenty-fourth session (issue 10): the small prefill kernels' issue-slot fixes
# (bf16r on cvt.rn.bf16.f32, exact reciprocal scaling and branch-free e2m1 rounding in the QDQs, index
# divisions without 64-bit calls, k_moe_combine16, wq_b into bf16 q16). test_engine's parts PARTS, test_attn
# and test_idx; then bench-gpu-engine --full --layers 8 on one GPU, the tree before (HEAD, carried as
# .out/head) and now alternating, ROUNDS times; then Nsight Compute on every launch of one flash4 chunk at 4096.
#   run(command="tar -xJf .out/s6/carry.tar.xz && xz -dk .out/head/bench-gpu-engine-head.xz && sh tools/gpu/s26d.sh s6 2>&1",
#       carry=[".out/s6", ".out/head"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
OLD=${OLD:-.out/head/bench-gpu-engine-head}
chmod +x "$OLD" 2>/dev/null
if [ -z "$NO_TESTS" ]; then
    gpu_test test_engine 400 CTX_ENGINE_PARTS=${PARTS:-fixture,tiny,mid,wg,idx,moe,mhc}
    gpu_test test_attn 200
    gpu_test test_idx 200
fi
for r in $(seq ${ROUNDS:-2}); do
    for v in old new; do
        if [ $v = old ]; then B=$OLD; else B=$C/bench-gpu-engine; fi
        t=$(date +%s)
        timeout 200 "$B" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 --prefill 65536 >"$OUT/full8-$v-r$r.txt" 2>&1
        echo "full --layers 8, $v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (4096 \| 1 \||65536 \|)" "$OUT/full8-$v-r$r.txt"
        grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-$v-r$r.txt" | tail -3
    done
done
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size
for P in ${POSITIONS:-4096}; do
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$P timeout 200 "$NCU" --profile-from-start off --cache-control none --clock-control none \
        --metrics $M --csv --page raw "$C/bench-gpu-engine" --suffix 4096 --ctx $P >"$OUT/ncu_chunk_$P.csv" 2>"$OUT/ncu_chunk_$P.err"
    echo "ncu chunk at $P: exit $? in $(($(date +%s) - t)) s"
    python3 tools/gpu/ncu_chunk.py "$OUT/ncu_chunk_$P.csv" >"$OUT/chunk_$P.txt" 2>&1
    head -30 "$OUT/chunk_$P.txt"
    xz -6 "$OUT/ncu_chunk_$P.csv"
done
