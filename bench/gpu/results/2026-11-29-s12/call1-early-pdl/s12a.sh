#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): (i) test_engine's parts PARTS on the tree
# (s6/, default topk,dtc,idx,tiny,mid,long,pdl: the ninth session's last commits had not run on a GPU);
# (ii) the same binary built with -DCTX_PDL_EARLY=1 (e/: pdl_begin triggers the next kernel before it
# waits) through test_engine's parts pdl,tiny,mid,dtc,moe (PDL off and on bit-identical, so early
# included); (iii) flash4 decode rows, s6 and e alternating ROUNDS times (default 3) in separate
# processes (PDL's trigger point is a compile-time switch).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12a.sh 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/s6:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-topk,dtc,idx,tiny,mid,long,pdl} timeout ${TEST_TIMEOUT:-200} s6/test_engine >"$OUT/tests.txt" 2>&1
say "(i) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${EPARTS:-pdl,tiny,mid,dtc,moe} timeout 150 e/test_engine >"$OUT/tests-early.txt" 2>&1
say "(ii) early test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests-early.txt") ok, $(grep -c '^not ok' "$OUT/tests-early.txt") not ok"
grep "^not ok" "$OUT/tests-early.txt" | cut -c1-300 | head -10 | tee -a "$S"
for r in $(seq 1 ${ROUNDS:-3}); do
    for b in s6 e; do
        t0=$(date +%s)
        timeout 100 $b/bench-gpu-engine --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-64} \
            >"$OUT/decode-$b-$r.txt" 2>&1
        say "(iii) decode $b round $r exit $? in $(($(date +%s) - t0)) s"
        grep -E "^\| flash4" "$OUT/decode-$b-$r.txt" | cut -c1-200 | tee -a "$S"
    done
done
say "total $(($(date +%s) - T0)) s"
