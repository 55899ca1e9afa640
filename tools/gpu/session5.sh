#!/bin/sh
# One device call for the merged engine of 2026-11-29's third session (issue 10): every GPU test that
# exists (with test_engine's PDL part, test_mark and test_accel), memcheck, then decode (flash4 4K/128K/500K
# with Programmatic Dependent Launch off and on in the same run, and the profile; mid 4K; 2 shards), prefill
# (8K suffix at 128K/500K with the stage table) and the per-kernel bench; it replaces session4.sh (the
# second session's, at commit e280da2). Binaries built on the workstation (stripped, with
# libcjson.so.1) in the flat folder $1, normally unpacked from a carried xz tarball:
#   run(command="tar -xJf .out/final/carry.tar.xz && sh tools/gpu/session5.sh fin 2>&1", carry=[".out/final"],
#       timeout_s=560)
# Logs under $OUT (at most 8 files: tests.txt, sanitizer.txt, decode.txt, prefill.txt, kernels.txt,
# summary.txt). BUDGET (s, default 520) bounds the whole; each part has its own timeout.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-fin}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
left() { echo $(( ${BUDGET:-520} - ($(date +%s) - T0) )); }
if ! nvidia-smi -L >/dev/null 2>&1; then
    say "session5: no GPU here; nothing run"
    exit 77
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$S"
for f in "$B"/*; do ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |"; done | tee -a "$S"

# the decode paths of this session's second round, all off (bench rows "old decode paths")
OLD_PATHS=${OLD_PATHS:-CTX_CUDA_MOE_SIDE=0 CTX_CUDA_MOE_COMBINE=0 CTX_CUDA_MOE_FUSE=0 CTX_CUDA_MOE_ROUTE=0 CTX_CUDA_HC_FUSE=0 CTX_CUDA_HC_SIDE=0 CTX_CUDA_FUSE_ATTN=0 CTX_CUDA_TOPK_FAST=0}
# (i) the tests
: >"$OUT/tests.txt"
for t in test_gemm test_kvpack test_idx test_attn test_wo test_moe_gemm test_multi test_mark test_accel test_engine; do
    [ -x "$B/$t" ] || continue
    t0=$(date +%s)
    echo "==== $t" >>"$OUT/tests.txt"
    CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,moe,mhc,afuse} timeout ${TEST_TIMEOUT:-120} "$B/$t" >>"$OUT/tests.txt" 2>&1
    rc=$?
    n_ok=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^ok')
    n_bad=$(sed -n "/^==== $t\$/,/^==== /p" "$OUT/tests.txt" | grep -c '^not ok')
    say "(i) $t exit $rc in $(($(date +%s) - t0)) s: $n_ok ok, $n_bad not ok"
done
grep "^not ok" "$OUT/tests.txt" | cut -c1-260 | head -20 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ -x "$B/test_engine" ]; then
    t0=$(date +%s)
    { CTX_ENGINE_PARTS=memcheck timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine";
      CTX_MULTI_PARTS=tiny timeout 40 "$CS" --tool memcheck --error-exitcode 9 "$B/test_multi";
      CTX_MARK_PARTS=tiny timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_mark"; } >"$OUT/sanitizer.txt" 2>&1
    say "(i) memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi

# (ii) decode
t0=$(date +%s)
{ timeout 150 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile --pdl both;
  echo "==== old decode paths (the round-2 switches off: $OLD_PATHS)";
  env $OLD_PATHS timeout 90 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
  echo "==== mid"; timeout 40 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48 --profile;
  echo "==== shards"; timeout 60 "$B/bench-gpu-engine" --models flash4 --ctx 4096 --steps 32 --shards 2; } \
    >"$OUT/decode.txt" 2>&1
say "(ii) decode benches in $(($(date +%s) - t0)) s"
grep -E "^\| (flash4|mid) |^\|  *[0-9]+ \| [0-9.]+ \||hop|shards|PDL|Programmatic" "$OUT/decode.txt" | cut -c1-220 | head -36 | tee -a "$S"

# (iii) prefill: suffix + stage table
l=$(left)
if [ "$l" -gt 60 ]; then
    t0=$(date +%s)
    timeout $((l - 40)) "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill.txt" 2>&1
    say "(iii) prefill bench exit $? in $(($(date +%s) - t0)) s"
    grep -E "^\| [0-9]+ \||Full|estimate" "$OUT/prefill.txt" | cut -c1-300 | head -20 | tee -a "$S"
fi

# (iv) per-kernel bench (decode rows and the experts' prefill rows)
l=$(left)
if [ "$l" -gt 25 ] && [ -x "$B/bench-gpu" ]; then
    t0=$(date +%s)
    timeout $((l - 10)) "$B/bench-gpu" >"$OUT/kernels.txt" 2>&1
    say "(iv) bench-gpu exit $? in $(($(date +%s) - t0)) s"
fi
say "session5: done in $(($(date +%s) - T0)) s"
