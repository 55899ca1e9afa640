#!/bin/sh
# A device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200: Nsight Compute's full set on
# one k_topk_row launch (the prefill top-k, a block a query) of a flash4 chunk of 4096 at 4096 and at 131072.
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine, then
#   run(command="tar -xJf .out/s7/carry.tar.xz && sh tools/gpu/s29d.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
for p in 4096 131072; do
    gpu_ncu_full topk$p k_topk_row 0 $p
    grep -E "Stall (No Instruction|Not Selected|Short Scoreboard|Long Scoreboard|Wait|MIO Throttle|Barrier|Math Pipe|LG Throttle|Membar|Drain)" "$OUT/details_topk$p.txt" | head -11
done
for f in "$OUT"/details_*.txt; do [ -f "$f" ] && xz -6 "$f"; done
