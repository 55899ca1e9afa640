#!/bin/sh
# A diagnostic device call of 2026-11-30's twenty-fifth session (issue 10): where a decode step's time goes
# inside its CUDA graph, launch by launch. The binary is bench-gpu-engine built from the tree with
# results/2026-11-30-s27/call4-skip/diag-skip.patch applied (a DIAGNOSTIC build, never committed: attn_fuse
# bits 10 + b skip decode launch b; the results are wrong by design, the times are what is read): flash4's
# graph step at 128K with each set of skips against the default 1023, 4 alternating rounds of one process
# (--attn-ab), three processes of 8 sets.
#   run(command="tar -xJf .out/s6/carry.tar.xz && xz -dk .out/diag/bench-gpu-engine-diag.xz && sh tools/gpu/s27d.sh s6 2>&1",
#       carry=[".out/s6", ".out/diag"], timeout_s=300)
. tools/gpu/lib.sh
gpu_setup "$1"
B=.out/diag/bench-gpu-engine-diag
chmod +x $B
n=0
for sets in 1023,2047,3071,5119,9215,17407,33791,66559 1023,132095,263167,525311,1049599,2098175,4195327,8389631 \
    1023,16778239,33555455,67109887,134218751,84115455,184321023; do
    n=$((n + 1))
    t=$(date +%s)
    timeout 120 $B --models flash4 --ctx ${CTX:-131072} --steps 48 --prefill-max 0 --attn-ab $sets >"$OUT/skip$n.txt" 2>&1
    echo "== skip run $n ($sets): exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| flash4  \| +[0-9]+ \| +[0-9.]+ \| +[0-9.]+ \|" "$OUT/skip$n.txt" | tail -1
done
