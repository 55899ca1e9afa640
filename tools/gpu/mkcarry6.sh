#!/bin/sh
# Build dir $1 (default build-s6: meson setup build-s6 -Dcuda=enabled -Ddaemon=enabled
# -Dbuildtype=debugoptimized) -> .out/s6/carry.tar.xz: the GPU tests and benches of session6.sh,
# stripped, with the shared libraries the GPU image lacks, in one flat folder s6/.
set -e
BD=${1:-build-s6}
T="tests/kernels/test_gemm tests/kernels/test_kvpack tests/kernels/test_idx tests/kernels/test_attn tests/kernels/test_wo tests/kernels/test_moe_gemm tests/kernels/test_multi tests/kernels/test_mark tests/kernels/test_accel tests/kernels/test_engine bench/gpu/bench-gpu-engine bench/gpu/bench-gpu bench/gpu/bench-gpu-restore bench/gpu/bench-gpu-p2p bench/gpu/bench-gpu-spec"
XZ_OPT=-9e exec sh "$(dirname "$0")/mkcarry-bins.sh" "$BD" s6 $T
