#!/bin/sh
# A device call of 2026-11-30's twenty-sixth session (issue 10), on nvidia-h200-x2: ctxd's prefill chunk with
# --backend cuda, 8192 by default now (4096 where the GPUs refuse it). test_spec_daemon against ctxd --backend cuda
# (its cuda_chunk_fallback: the default chunk, the fallback to 4096 under CTX_TEST_CUDA_MAX_CHUNK=4096, and a
# --chunk asked for refused, not replaced), then ctxd's own prefill of a 131K-token repository over both GPUs with
# V4-Flash's 43 layers (tools/gpu/s20d.sh) in chunks of 4096 (--chunk 4096) and of the default, in that order.
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build, then
#   run(command="tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz && sh tools/gpu/s28c.sh dm 2>&1",
#       carry=[".out/dm"], kind="nvidia-h200-x2", timeout_s=590)
set -u
TOP=${OUT:-/tmp/out}
mkdir -p "$TOP"
B="$PWD/${1:-dm}"
t0=$(date +%s)
env LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP \
    CTX_TEST_CTXD_FLAGS="--backend cuda" NCCL_NVLS_ENABLE=0 timeout 240 "$B/t/test_spec_daemon" "$B/ctxd" \
    >"$TOP/test_spec_daemon.txt" 2>&1
echo "test_spec_daemon (--backend cuda): exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$TOP/test_spec_daemon.txt") ok, $(grep -c '^not ok' "$TOP/test_spec_daemon.txt") not ok"
grep -E "^not ok|chunk" "$TOP/test_spec_daemon.txt" | head -8
for v in 4096 default; do
    mkdir -p "$TOP/ctxd-$v"
    if [ $v = default ]; then x=""; else x="--chunk $v"; fi
    OUT="$TOP/ctxd-$v" CTXD_EXTRA="$x" timeout 250 sh tools/gpu/s20d.sh "${1:-dm}"
    echo "ctxd chunk $v: exit $?"
done
