#!/bin/sh
# The session's last device call (2026-11-29, fourth session, issue 10), for what landed after
# final6.sh's run: the MoE GEMM V4 as the default at every size (test_moe_gemm, test_engine's
# tiny/mid/long/moe parts, bench-gpu moe), the background fill of a packed restore's host copy
# (test_accel, the 500K restore bench's ctxd rows) and ctxd with both (the daemon's integration tests
# against --backend cuda). Two carries: .out/s6 (tools/gpu/mkcarry6.sh) and .out/dm
# (tools/gpu/mkcarry-daemon.sh), with tests/fixtures/v4-tiny-a moved out of the tree for the size:
#   run(command="tar -xJf .out/s6/carry.tar.xz && tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz
#       && sh tools/gpu/last6.sh 2>&1", carry=[".out/s6", ".out/dm"], timeout_s=330)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-300} - ($(date +%s) - T0) )); }
nvidia-smi -L >/dev/null 2>&1 || { say "last6: no GPU here"; exit 77; }
export NCCL_NVLS_ENABLE=0 CTX_SOURCE_ROOT="$PWD"
count() { say "$1 exit $2 in $3 s: $(grep -c '^ok' "$4") ok, $(grep -c '^not ok' "$4") not ok"; grep '^not ok' "$4" | cut -c1-240 | head -8 | tee -a "$S"; }
(
    export LD_LIBRARY_PATH="$PWD/s6:$LD_LIBRARY_PATH"
    t0=$(date +%s); timeout 80 s6/test_moe_gemm >"$OUT/test_moe_gemm.txt" 2>&1; count test_moe_gemm $? $(($(date +%s) - t0)) "$OUT/test_moe_gemm.txt"
    grep -E "runs V|default kernel" "$OUT/test_moe_gemm.txt" | head -4 | tee -a "$S"
    t0=$(date +%s); CTX_ENGINE_PARTS=tiny,mid,long,moe timeout 80 s6/test_engine >"$OUT/test_engine.txt" 2>&1
    count "test_engine (tiny,mid,long,moe)" $? $(($(date +%s) - t0)) "$OUT/test_engine.txt"
    t0=$(date +%s); timeout 80 s6/test_accel >"$OUT/test_accel.txt" 2>&1; count test_accel $? $(($(date +%s) - t0)) "$OUT/test_accel.txt"
    t0=$(date +%s); timeout 40 s6/bench-gpu moe >"$OUT/kernels.txt" 2>&1; say "bench-gpu moe exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\|  *[0-9]+ \|" "$OUT/kernels.txt" | cut -c1-150 | tee -a "$S"
)
TEST_TIMEOUT=60 sh tools/gpu/daemon-tests.sh dm 2>&1 | tee -a "$S"
if [ "$(left)" -gt 100 ]; then
    DISK="$PWD/.out/l6-disk"; mkdir -p "$DISK"; t0=$(date +%s)
    LD_LIBRARY_PATH="$PWD/s6:$LD_LIBRARY_PATH" timeout $(( $(left) - 5 )) s6/bench-gpu-restore bench --ctx 500000 --reps 5 --disk-reps 2 --dir "$DISK/kv" >"$OUT/restore.txt" 2>&1
    say "restore bench exit $? in $(($(date +%s) - t0)) s"; rm -rf "$DISK"
    grep -E "ctxd|snapshot|identical" "$OUT/restore.txt" | cut -c1-260 | tee -a "$S"
fi
say "last6: done in $(($(date +%s) - T0)) s"
