#!/bin/sh
# A device call of 2026-11-30's twenty-sixth session (issue 10), on nvidia-h200-x2: cuda_multi_prefill's own
# chunk (chunk 0, as ctxd calls it) now makes 2 chunks a GPU whatever the engine's largest chunk. test_multi
# over both GPUs, then bench-gpu-engine --full with no 500K prefill (--prefill 0: decode at 4K, the 8K suffix
# at 128K / 500K) with the engine's chunks of 4096 and of 8192 (the new default), in that order.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s28e.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
. tools/gpu/lib.sh
gpu_setup "$1"
export NCCL_NVLS_ENABLE=0
[ -z "${NO_TESTS:-}" ] && gpu_test test_multi 200
for c in 4096 8192; do
    t=$(date +%s)
    timeout 200 "$C/bench-gpu-engine" --full --ctx 131072,500000 --steps 4 --prefill 0 --chunk $c >"$OUT/sfx-$c.txt" 2>&1
    echo "bench-gpu-engine --full --prefill 0 --chunk $c: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| (131072|500000) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+% \|" "$OUT/sfx-$c.txt"
done
[ -f "$OUT/test_multi.txt" ] && xz -6 "$OUT/test_multi.txt"
exit 0
