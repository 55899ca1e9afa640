#!/bin/sh
# A small carry: build dir $1 (a CUDA build), carry name $2, then the programs to carry (paths inside the build
# dir) -> .out/$2/carry.tar.xz with the programs stripped in one flat folder $2/ and the shared libraries the
# GPU image lacks (xz at $XZ_OPT, default -6). mkcarry6.sh packs its full set through it (at -9e: ~4 minutes).
#   sh tools/gpu/mkcarry-bins.sh build-cuda s7 tests/kernels/test_engine bench/gpu/bench-gpu-engine
set -e
cd "$(dirname "$0")/../.."
BD=$1 N=$2
shift 2
ninja -C "$BD" "$@" >/dev/null
rm -rf ".out/$N" && mkdir -p ".out/$N/$N"
for f in "$@"; do cp "$BD/$f" ".out/$N/$N/"; done
strip ".out/$N/$N"/*
for l in libcjson.so.1 libsqlite3.so.0 libxxhash.so.0; do cp -L "/lib/x86_64-linux-gnu/$l" ".out/$N/$N/"; done
XZ_OPT=${XZ_OPT:--6} tar -C ".out/$N" -cJf ".out/$N/carry.tar.xz" "$N" && rm -rf ".out/$N/$N"
ls -la ".out/$N/carry.tar.xz"
