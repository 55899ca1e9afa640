#!/bin/sh
# 2026-11-29 twelfth session, second and third calls (issue 10): the FP8 grouped GEMM V7 (two CTAs
# an SM; guard at a spread of 11 in call2, 12 in call3): test_moe_gemm, bench-gpu moe at S = 512 /
# 2048 / 8192, test_engine
# (fixture, tiny, mid, moe, long, pdl) and test_accel with V7 on the engine's fast prefill path, the
# prefill A/B and estimates, memcheck (test_moe_gemm quick, test_engine's memcheck part), then V7's SASS
# (cuobjdump) and Nsight Compute's warp states and source counters at S = 2048.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s14b.sh s6 2>&1", carry=[".out/s6"], timeout_s=500)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-470} - ($(date +%s) - T0) )); }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
: >"$OUT/tests.txt"
runt() { # name parts timeout
    t0=$(date +%s)
    echo "==== $1 $2" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=$2 timeout $3 "$B/$1" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $1 $2\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $1 $2\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "$1 [$2] exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
}
runt test_moe_gemm - 120
grep -E "^not ok|first miss|CTAs per SM" "$OUT/tests.txt" | cut -c1-300 | head -12 | tee -a "$S"
grep -E "V7 .*vs the exact" "$OUT/tests.txt" | sed 's/.*largest |d| \/ (2^-9 mag) \([0-9.]*\).*/\1/' | sort -g | tail -1 | sed 's/^/largest V7 |d|\/(2^-9 mag): /' | tee -a "$S"
t0=$(date +%s)
for s in 512 2048 8192; do timeout 60 "$B/bench-gpu" moe $s; done >"$OUT/moe.txt" 2>&1
say "bench-gpu moe in $(($(date +%s) - t0)) s"
grep -E "^\| (V[5-7]|  *[0-9])" "$OUT/moe.txt" | cut -c1-200 | tee -a "$S"
runt test_engine fixture,tiny,mid,moe,long,pdl 180
runt test_accel - 100
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -20 | tee -a "$S"
grep -E "^# (synthetic|fixture: |chunked)" "$OUT/tests.txt" | cut -c1-250 | head -20 | tee -a "$S"
t0=$(date +%s)
timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
say "prefill bench exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (4096|131072|500000) \||Full|rejected" "$OUT/prefill.txt" | cut -c1-300 | head -30 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ "$(left)" -gt 150 ]; then
    t0=$(date +%s)
    { CTX_MOE_QUICK=1 timeout 80 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm";
      CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine"; } >"$OUT/sanitizer.txt" 2>&1
    say "memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
OBJ=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
[ -n "$OBJ" ] && "$OBJ" -sass "$B/bench-gpu" 2>/dev/null | awk '/Function : .*moe_gemm7/{p=1} /Function : / && !/moe_gemm7/{p=0} p' >"$OUT/moe7.sass" && xz -9 "$OUT/moe7.sass"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
l=$(left)
if [ -n "$NCU" ] && [ "$l" -gt 40 ]; then
    timeout $((l - 5)) "$NCU" --section SpeedOfLight --section WarpStateStats --section SourceCounters --section InstructionStats --section ComputeWorkloadAnalysis --kernel-name regex:moe_gemm7 -c 1 "$B/bench-gpu" moe 2048 >"$OUT/ncu_moe7.txt" 2>&1
    say "ncu moe7 exit $?"
    grep -E "Duration|Issue Slots|Eligible|Warp Cycles|Stall|stall|Executed Instructions " "$OUT/ncu_moe7.txt" | cut -c1-160 | head -30 | tee -a "$S"
fi
say "s14b: done in $(($(date +%s) - T0)) s"
