#!/bin/sh
# Seventeenth session (issue 10): speculative decoding through the accelerator, as ctxd runs it
# (inference/spec.h over cuda_accel's spec ops). One call on one H200, after
# `sh tools/gpu/mkcarry6.sh build-cuda` and `sh tools/gpu/mkcarry-daemon.sh build-cuda build`
# (models/ctx-small moved out of the tree for the call's size: test_accel's ctx-small rows then
# report it missing, and test_spec_daemon's no-MTP case skips):
#   run(command="tar -xJf .out/s6/carry.tar.xz && tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz && sh tools/gpu/s19a.sh 2>&1",
#       carry=[".out/s6", ".out/dm"], timeout_s=590)
# - test_accel (its spec part: v4-tiny-a on one engine and over 2 layer-split shards, synthetic mid:
#   every step's logits bit-equal to a plain decode of the same tokens on the accelerator);
# - test_spec_daemon against `ctxd --backend cuda` (greedy and teacher-forced agent runs with --spec
#   give the plain daemon's answers);
# - bench-gpu-spec --accel: decode through the accelerator, plain and at set acceptances;
# - test_engine's spec, fixture and tiny parts and test_multi's spec part (the engine's logits rows);
# - compute-sanitizer memcheck of test_accel's spec part on the fixture.
# $1 = extra bench-gpu-spec arguments (e.g. "--shards 2" on nvidia-h200-x2).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
T0=$(date +%s)
for p in spec fixture tiny; do
    LD_LIBRARY_PATH="$PWD/s6" CTX_ENGINE_PARTS=$p timeout 200 s6/test_engine >"$OUT/test_engine_$p.txt" 2>&1
    echo "test_engine $p exit $?: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
done
LD_LIBRARY_PATH="$PWD/s6" CTX_MULTI_PARTS=spec timeout 200 s6/test_multi >"$OUT/test_multi_spec.txt" 2>&1
echo "test_multi spec exit $?: $(grep -c '^ok' "$OUT/test_multi_spec.txt") ok, $(grep -c '^not ok' "$OUT/test_multi_spec.txt") not ok"
LD_LIBRARY_PATH="$PWD/dm/lib" timeout 400 dm/test_accel >"$OUT/test_accel.txt" 2>&1
echo "test_accel exit $? in $(($(date +%s) - T0)) s: $(grep -c '^ok' "$OUT/test_accel.txt") ok, $(grep -c '^not ok' "$OUT/test_accel.txt") not ok"
grep -E "^not ok|spec|draft|kept" "$OUT/test_accel.txt" | head -30
t=$(date +%s)
LD_LIBRARY_PATH="$PWD/dm/lib" CTX_TEST_CTXD_FLAGS="--backend cuda" timeout 300 dm/t/test_spec_daemon dm/ctxd >"$OUT/test_spec_daemon.txt" 2>&1
echo "test_spec_daemon (ctxd --backend cuda) exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_spec_daemon.txt") ok, $(grep -c '^not ok' "$OUT/test_spec_daemon.txt") not ok"
grep -E "^not ok|^#|skip" "$OUT/test_spec_daemon.txt" | head -12
t=$(date +%s)
LD_LIBRARY_PATH="$PWD/s6" timeout 300 s6/bench-gpu-spec --ctx 4096,131072 --tokens 64 --accel ${1:-} >"$OUT/spec-accel.txt" 2>&1
echo "bench-gpu-spec --accel exit $? in $(($(date +%s) - t)) s"
cat "$OUT/spec-accel.txt"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ] && [ $(($(date +%s) - T0)) -lt 400 ]; then
    LD_LIBRARY_PATH="$PWD/dm/lib" CTX_ACCEL_ONLY_SPEC=1 timeout 150 "$SAN" --tool memcheck --leak-check no dm/test_accel >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck exit $?: $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
fi
echo "s19a in $(($(date +%s) - T0)) s"
