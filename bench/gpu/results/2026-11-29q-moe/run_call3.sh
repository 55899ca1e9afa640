#!/bin/sh
# moe V3, last call: bench (S = 512 / 2048 / 8192), the full test, memcheck over the quick cases,
# then Nsight Compute on one launch each of V3 and V2 (the w1|w3 product at S = 2048)
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD:$LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > $OUT/device.txt 2>&1
t=$(date +%s)
timeout 25 ./bench-gpu moe > $OUT/bench_moe.txt 2>&1; echo "# rc=$? $(( $(date +%s) - t )) s" >> $OUT/bench_moe.txt
t=$(date +%s)
timeout 45 ./test_moe_gemm > $OUT/test_moe_gemm.txt 2>&1; echo "# rc=$? $(( $(date +%s) - t )) s" >> $OUT/test_moe_gemm.txt
t=$(date +%s)
CTX_MOE_QUICK=1 timeout 20 compute-sanitizer --tool memcheck --print-limit 20 ./test_moe_gemm > $OUT/memcheck.txt 2>&1; echo "# rc=$? $(( $(date +%s) - t )) s" >> $OUT/memcheck.txt
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for kn in moe_gemm3_kernel moe_gemm2_kernel; do
  t=$(date +%s)
  timeout 40 "$NCU" --clock-control none -k regex:$kn -c 1 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section InstructionStats --section MemoryWorkloadAnalysis_Tables ./bench-gpu moe 2048 > /tmp/ncu_$kn.txt 2>&1
  echo "== $kn: rc=$? $(( $(date +%s) - t )) s" >> $OUT/ncu.txt
  sed -n '/moe_gemm/,$p' /tmp/ncu_$kn.txt | grep -v "^|" >> $OUT/ncu.txt
done
grep -c "^ok" $OUT/test_moe_gemm.txt; grep "^not ok\|^Bail\|^1\.\.\|^# rc" $OUT/test_moe_gemm.txt | head
cat $OUT/bench_moe.txt
tail -3 $OUT/memcheck.txt
grep -i "== \|Duration\|Throughput\|Issue Slots\|Stall\|Warp Cycles\|Active Warps\|Eligible\|Achieved Occ\|Registers\|Executed Ipc\|Pipe\|Bandwidth\|Hit Rate" $OUT/ncu.txt | head -80
