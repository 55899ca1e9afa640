#!/bin/sh
# mkcarry6.sh's carry (.out/s6/carry.tar.xz: build dir $1's GPU tests and benches in s6/) plus, for each
# further argument DIR:NAME, DIR's bench-gpu-engine and test_engine in NAME/ (a second build of the
# same tree with other compile-time switches, for an A/B in one device call; 2026-11-29's tenth session:
# build-cuda-early, -Dgpu_gencode='... -DCTX_PDL_EARLY=1').
set -e
BD=${1:-build-cuda}
shift
sh tools/gpu/mkcarry6.sh "$BD"
cd .out/s6 && tar -xJf carry.tar.xz && cd ../..
for a in "$@"; do
    d=${a%%:*} n=${a#*:}
    ninja -C "$d" bench/gpu/bench-gpu-engine tests/kernels/test_engine
    mkdir -p .out/s6/"$n"
    cp "$d"/bench/gpu/bench-gpu-engine "$d"/tests/kernels/test_engine .out/s6/"$n"/
    strip .out/s6/"$n"/*
done
XZ_OPT=-9e tar -C .out/s6 -cJf .out/s6/carry.tar.xz $(cd .out/s6 && ls -d */)
find .out/s6 -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
ls -la .out/s6
