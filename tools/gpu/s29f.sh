#!/bin/sh
# A device call of 2026-12-01's twenty-seventh session (issue 10), on nvidia-h200: test_spec_daemon against ctxd
# --backend cuda (the tiny synthetic model) on the tree with the compressors' prefill products on cuBLASLt: its
# cuda_chunk_fallback and the CUDA speculative cases, as refactored by commit 721a219 (not run on a GPU since).
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build, then
#   run(command="tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz && sh tools/gpu/s29f.sh dm 2>&1",
#       carry=[".out/dm"], kind="nvidia-h200", timeout_s=200)
set -u
TOP=${OUT:-/tmp/out}
mkdir -p "$TOP"
B="$PWD/${1:-dm}"
t0=$(date +%s)
env LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP \
    CTX_TEST_CTXD_FLAGS="--backend cuda" timeout 150 "$B/t/test_spec_daemon" "$B/ctxd" >"$TOP/test_spec_daemon.txt" 2>&1
echo "test_spec_daemon (--backend cuda): exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$TOP/test_spec_daemon.txt") ok, $(grep -c '^not ok' "$TOP/test_spec_daemon.txt") not ok"
grep -E "^not ok|^ok" "$TOP/test_spec_daemon.txt" | cut -c1-200 | head -12
