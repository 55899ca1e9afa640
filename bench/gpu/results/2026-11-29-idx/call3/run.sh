#!/bin/sh
# idx final call: per tc3 variant (default = A in registers, 2 groups in flight; x = A in shared memory, 4 in flight):
# test_idx, bench, test_engine (long parts), memcheck of test_idx quick; then ncu of the default tc3 at S = 2048
B=$PWD; T0=$(date +%s)
export LD_LIBRARY_PATH="$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$(cd ../.. && pwd)"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$B/test_engine" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/summary.txt
cnt() { echo "$(grep -c '^ok' $1) ok, $(grep -c '^not ok' $1) not ok"; }
for V in r x; do
  export CTX_IDX_TC3=$V
  t0=$(date +%s); timeout 45 ./bench-gpu-engine --suffix 2048 --ctx 500000 > $OUT/bench_$V.txt 2>&1
  echo "[$V] bench exit $? in $(( $(date +%s) - t0 )) s" | tee -a $OUT/summary.txt
  grep -E "^\| (1|4|16|256|2048|500000) " $OUT/bench_$V.txt | head -6 | tee -a $OUT/summary.txt
  t0=$(date +%s); timeout 45 ./test_idx > $OUT/test_idx_$V.txt 2>&1
  echo "[$V] test_idx exit $? in $(( $(date +%s) - t0 )) s: $(cnt $OUT/test_idx_$V.txt)" | tee -a $OUT/summary.txt
  grep -E "^not ok|^# " $OUT/test_idx_$V.txt | head -10 | cut -c1-300 | tee -a $OUT/summary.txt
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for V in r x; do
  export CTX_IDX_TC3=$V
  t0=$(date +%s); CTX_IDX_QUICK=1 timeout 25 $CS --tool memcheck --error-exitcode 9 ./test_idx > /tmp/san_$V.txt 2>&1
  echo "[$V] memcheck exit $? in $(( $(date +%s) - t0 )) s: $(cnt /tmp/san_$V.txt); $(grep 'ERROR SUMMARY' /tmp/san_$V.txt)" | tee -a $OUT/summary.txt
  (echo "#### CTX_IDX_TC3=$V"; cat /tmp/san_$V.txt) >> $OUT/sanitizer.txt
done
for V in r x; do
  export CTX_IDX_TC3=$V
  t0=$(date +%s); CTX_ENGINE_PARTS=fixture,tiny,mid,long timeout 50 ./test_engine > /tmp/te_$V.txt 2>&1
  echo "[$V] test_engine exit $? in $(( $(date +%s) - t0 )) s: $(cnt /tmp/te_$V.txt)" | tee -a $OUT/summary.txt
  grep -E "^not ok" /tmp/te_$V.txt | head -5 | cut -c1-300 | tee -a $OUT/summary.txt
  (echo "#### CTX_IDX_TC3=$V"; cat /tmp/te_$V.txt) >> $OUT/test_engine.txt
done
unset CTX_IDX_TC3
left=$(( 188 - ($(date +%s) - T0) ))
N=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
SEC="--section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section SchedulerStats"
if [ $left -gt 15 ]; then
t0=$(date +%s); timeout $left "$N" $SEC --kernel-name regex:k_idx_score_tc3 --launch-skip 9 -c 1 ./bench-gpu-engine --suffix 2048 --ctx 500000 --models flash4 > $OUT/ncu_tc3.txt 2>&1
echo "ncu exit $? in $(( $(date +%s) - t0 )) s" | tee -a $OUT/summary.txt
grep -E "Duration|Throughput|Pipe|Issue|Eligible|Registers|Achieved Occupancy|Warp Cycles" $OUT/ncu_tc3.txt | cut -c1-120 | head -30 | tee -a $OUT/summary.txt
fi
