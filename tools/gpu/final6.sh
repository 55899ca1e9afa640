#!/bin/sh
# The second device call of 2026-11-29's fourth session (issue 10), for what landed after session6.sh's
# run: a kernel variant (run-time switch CTX_CUDA_MOE_GEMM; when it ran, the f16 kernels FP8 GEMM V3,
# since removed, and MoE GEMM V4, now the default) checked by its tests, by test_engine and the prefill
# rows with the switch on beside the defaults, and timed by bench-gpu; then test_accel (the lagging
# snapshot) and the 500K restore bench's ctxd rows. Same carry as session6.sh (tools/gpu/mkcarry6.sh):
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/final6.sh s6 2>&1", carry=[".out/s6"],
#       timeout_s=560)
# VARIANTS (default "CTX_CUDA_MOE_GEMM=3": the previous MoE kernel) is the environment of the second runs.
# (Its first run, results/2026-11-29s, had VARIANTS="CTX_CUDA_FP8_GEMM=3 CTX_CUDA_MOE_GEMM=4", the f16 kernels
# then under trial; the FP8 GEMM V3 was removed after it.)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-540} - ($(date +%s) - T0) )); }
nvidia-smi -L >/dev/null 2>&1 || { say "final6: no GPU here"; exit 77; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
V=${VARIANTS:-CTX_CUDA_MOE_GEMM=3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
count() { say "$1 exit $2 in $3 s: $(grep -c '^ok' "$4") ok, $(grep -c '^not ok' "$4") not ok"; grep '^not ok' "$4" | cut -c1-240 | head -8 | tee -a "$S"; }
for t in test_gemm test_moe_gemm test_accel; do
    t0=$(date +%s); timeout 150 "$B/$t" >"$OUT/$t.txt" 2>&1; count "$t" $? $(($(date +%s) - t0)) "$OUT/$t.txt"
done
P=fixture,tiny,mid,long,moe
t0=$(date +%s); CTX_ENGINE_PARTS=$P timeout 120 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
count "test_engine ($P, defaults)" $? $(($(date +%s) - t0)) "$OUT/test_engine.txt"
t0=$(date +%s); env $V CTX_ENGINE_PARTS=$P timeout 120 "$B/test_engine" >"$OUT/test_engine_v.txt" 2>&1
count "test_engine ($P, $V)" $? $(($(date +%s) - t0)) "$OUT/test_engine_v.txt"
t0=$(date +%s)
{ timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000; echo "==== $V";
  env $V timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000; } >"$OUT/prefill.txt" 2>&1
say "prefill, defaults then $V, in $(($(date +%s) - t0)) s"
grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9]+ \||Full|^\| [0-9]+ \| 0\.|^\| [0-9]+ \| 2048 \||^====" "$OUT/prefill.txt" | cut -c1-200 | tee -a "$S"
t0=$(date +%s)
{ timeout 60 "$B/bench-gpu" gemm; timeout 60 "$B/bench-gpu" moe; } >"$OUT/kernels.txt" 2>&1
say "bench-gpu gemm + moe in $(($(date +%s) - t0)) s"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ "$(left)" -gt 150 ]; then
    t0=$(date +%s)
    { CTX_TEST_GEMM_QUICK=1 timeout 40 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm";
      CTX_MOE_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm"; } >"$OUT/sanitizer.txt" 2>&1
    say "memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
fi
if [ "$(left)" -gt 120 ]; then
    DISK="$PWD/.out/f6-disk"; mkdir -p "$DISK"; t0=$(date +%s)
    timeout $(( $(left) - 10 )) "$B/bench-gpu-restore" bench --ctx 500000 --reps 10 --disk-reps 2 --dir "$DISK/kv" >"$OUT/restore.txt" 2>&1
    say "restore bench exit $? in $(($(date +%s) - t0)) s"; rm -rf "$DISK"
    grep -E "ctxd|snapshot" "$OUT/restore.txt" | cut -c1-230 | tee -a "$S"
fi
say "final6: done in $(($(date +%s) - T0)) s"
