#!/bin/sh
# One device call for the merged engine of 2026-11-29's fourth session (issue 10): every GPU test that
# exists in $1 (test_accel with the packed restore, test_gemm with the FP8 GEMM V2, test_moe_gemm), the
# prefill rows (8K suffix at 128K / 500K, the 500K estimate, the stage table), the 500K restore bench with
# ctxd's packed path, a decode check (flash4 4K/128K/500K, mid), compute-sanitizer memcheck and the
# per-kernel bench. It replaces session5.sh for the tests; session5.sh stays for its decode comparisons (PDL
# off and on, the third session's decode paths off, 2 shards). Binaries built on
# the workstation (stripped, with libcjson.so.1, libsqlite3.so.0, libxxhash.so.0) in the flat folder $1,
# normally unpacked from a carried xz tarball (tools/gpu/mkcarry6.sh):
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/session6.sh s6 2>&1", carry=[".out/s6"],
#       timeout_s=590)
# Logs under $OUT: tests.txt, prefill.txt, restore.txt, decode.txt, sanitizer.txt, kernels.txt,
# summary.txt. BUDGET (s, default 560) bounds the whole; each part has its own timeout.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - T0) )); }
if ! nvidia-smi -L >/dev/null 2>&1; then
    say "session6: no GPU here; nothing run"
    exit 77
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$S"
for f in "$B"/*; do ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |"; done | tee -a "$S"

# (i) the tests
: >"$OUT/tests.txt"
for t in test_gemm test_kvpack test_idx test_attn test_wo test_moe_gemm test_multi test_mark test_accel test_engine; do
    [ -x "$B/$t" ] || continue
    t0=$(date +%s)
    echo "==== $t" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,moe,mhc,afuse} timeout ${TEST_TIMEOUT:-150} "$B/$t" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "(i) $t exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
done
grep "^not ok" "$OUT/tests.txt" | cut -c1-260 | head -20 | tee -a "$S"

# (ii) prefill: suffix + stage table + the 500K estimate
t0=$(date +%s)
timeout 100 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
say "(ii) prefill bench exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| [0-9]+ \||Full|estimate" "$OUT/prefill.txt" | cut -c1-300 | head -20 | tee -a "$S"

# (iii) restore of a 500K-token state: pinned, disk, and ctxd's paths
if [ "${RESTORE:-1}" = 1 ] && [ -x "$B/bench-gpu-restore" ] && [ "$(left)" -gt 200 ]; then
    DISK="$PWD/.out/s6-disk"
    mkdir -p "$DISK"
    t0=$(date +%s)
    timeout 170 "$B/bench-gpu-restore" bench --ctx 500000 --reps 10 --disk-reps 2 --dir "$DISK/kv" >"$OUT/restore.txt" 2>&1
    say "(iii) restore bench exit $? in $(($(date +%s) - t0)) s"
    rm -rf "$DISK"
    grep -iE "ctxd|speed|identical|^\| " "$OUT/restore.txt" | cut -c1-220 | head -24 | tee -a "$S"
fi

# (iv) decode check
if [ "$(left)" -gt 90 ]; then
    t0=$(date +%s)
    { timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
      echo "==== mid"; timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode.txt" 2>&1
    say "(iv) decode benches in $(($(date +%s) - t0)) s"
    grep -E "^\| (flash4|mid) |43 layers|extrapol" "$OUT/decode.txt" | cut -c1-220 | head -16 | tee -a "$S"
fi

# (v) memcheck
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ "$(left)" -gt 70 ]; then
    t0=$(date +%s)
    { CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine";
      CTX_TEST_GEMM_QUICK=1 timeout 40 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gemm";
      CTX_MOE_QUICK=1 timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_moe_gemm"; } >"$OUT/sanitizer.txt" 2>&1
    say "(v) memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi

# (vi) per-kernel bench (prefill GEMM rows, the experts' prefill rows)
l=$(left)
if [ "$l" -gt 25 ] && [ -x "$B/bench-gpu" ]; then
    t0=$(date +%s)
    timeout $((l - 10)) "$B/bench-gpu" >"$OUT/kernels.txt" 2>&1
    say "(vi) bench-gpu exit $? in $(($(date +%s) - t0)) s"
fi
say "session6: done in $(($(date +%s) - T0)) s"
