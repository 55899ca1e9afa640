#!/bin/sh
# Builds what tools/gpu/daemon.sh needs on the GPU machine into .out/dm/carry.tar.xz: ctxd with the
# CUDA backend (build dir $1, default build-cuda: meson setup ... -Dcuda=enabled), ctx (from the
# CPU build dir $2, default build), tests/kernels/test_accel, and the shared libraries the GPU image
# lacks (libuv, libgit2 and its own, cJSON, SQLite, xxHash, PCRE2, curl's). The working tree plus the
# carry must stay under 64 MiB: move tests/fixtures/v4-tiny-a out of the tree for that call if needed.
set -e
cd "$(dirname "$0")/../.."
BD=${1:-build-cuda}
BC=${2:-build}
[ -f "$BD/build.ninja" ] || meson setup "$BD" -Dcuda=enabled -Ddaemon=enabled -Dbuildtype=debugoptimized >/dev/null
ninja -C "$BD" daemon/ctxd tests/kernels/test_accel tests/kernels/test_mark >/dev/null
ninja -C "$BC" cli/ctx >/dev/null
rm -rf .out/dm && mkdir -p .out/dm/dm/lib
cp "$BD/daemon/ctxd" "$BD/tests/kernels/test_accel" "$BD/tests/kernels/test_mark" "$BC/cli/ctx" .out/dm/dm/
strip .out/dm/dm/ctxd .out/dm/dm/ctx .out/dm/dm/test_accel .out/dm/dm/test_mark
for l in libuv.so.1 libgit2.so.1.5 libhttp_parser.so.2.9 libmbedcrypto.so.7 libmbedtls.so.14 libmbedx509.so.1 \
    libssh2.so.1 libcjson.so.1 libsqlite3.so.0 libxxhash.so.0 libpcre2-8.so.0 libcurl.so.4 libnghttp2.so.14 \
    librtmp.so.1 libpsl.so.5 libldap-2.5.so.0 liblber-2.5.so.0 libunistring.so.2 libsasl2.so.2; do
    cp -L "/lib/x86_64-linux-gnu/$l" .out/dm/dm/lib/
done
strip .out/dm/dm/lib/* 2>/dev/null || true
tar -C .out/dm -cJf .out/dm/carry.tar.xz dm && rm -rf .out/dm/dm
ls -la .out/dm/carry.tar.xz
