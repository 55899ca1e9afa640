#!/bin/sh
# The daemon's integration tests (tests/daemon: resident state, KV cache, live edits and buffers,
# completions, the agent, sessions, the tool grammar) against `ctxd --backend cuda` on the GPU
# machine: the test programs (built without CUDA: they only talk to the daemon) start the CUDA ctxd
# with $CTX_TEST_CTXD_FLAGS="--backend cuda" appended (tests/daemon/harness.h). Their assertions are
# the same as in CI, so the daemon's snapshot / truncate / checkpoint / restore / swap paths are
# checked on the device state. Built by tools/gpu/mkcarry-daemon.sh (with the tests); then
#   run(command="tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz && sh tools/gpu/daemon-tests.sh dm 2>&1",
#       carry=[".out/dm"], timeout_s=560)
set -u
TOP=${OUT:-/tmp/out}
OUT="$TOP/daemon-tests"
mkdir -p "$OUT"
B="$PWD/${1:-dm}"
export LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD"
export CMOCKA_MESSAGE_OUTPUT=TAP CTX_TEST_CTXD_FLAGS="${FLAGS:---backend cuda}" NCCL_NVLS_ENABLE=0
T0=$(date +%s)
for spec in "test_resident 1" "test_cache 1" "test_buffers 1" "test_fim 2" "test_sessions_daemon 2" "test_agent 2" "test_tool_grammar 1"; do
    set -- $spec
    t=$1
    [ -x "$B/t/$t" ] || { echo "$t: not carried"; continue; }
    t0=$(date +%s)
    if [ "$2" = 2 ]; then
        timeout ${TEST_TIMEOUT:-240} "$B/t/$t" "$B/ctxd" "$B/ctx" >"$OUT/$t.txt" 2>&1
    else
        timeout ${TEST_TIMEOUT:-240} "$B/t/$t" "$B/ctxd" >"$OUT/$t.txt" 2>&1
    fi
    rc=$?
    echo "$t exit $rc in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/$t.txt") ok, $(grep -c '^not ok' "$OUT/$t.txt") not ok"
    grep -E "^not ok|^# (SKIP|skip)" "$OUT/$t.txt" | head -5
done
echo "daemon tests against ctxd $CTX_TEST_CTXD_FLAGS in $(($(date +%s) - T0)) s"
tar -C "$TOP" -czf "$TOP/daemon-tests.tar.gz" daemon-tests && rm -rf "$OUT"
