#!/bin/sh
# The GPU machine's side of one device run (kernels/README.md says how it is called): the kernels'
# checks against the C reference, then the benchmark, logs under $OUT. Runs the binaries built here
# (build-c, carried); rebuilds them with plain nvcc only if they cannot load there.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-build-c}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee "$OUT/device.txt"
if ldd "$B/tests/kernels/test_gemm" | grep -q "not found"; then
    lib=$(dirname "$(find / -name 'libcublasLt.so.13*' 2>/dev/null | head -1)")
    export LD_LIBRARY_PATH="$lib:$LD_LIBRARY_PATH"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$OUT/device.txt"
fi
if ! "$B/kernels/ctx-cuda-probe" >>"$OUT/device.txt" 2>&1; then
    echo "carried binaries do not run; building with nvcc" | tee -a "$OUT/device.txt"
    B=/tmp/nvb
    mkdir -p $B/tests/kernels $B/bench/gpu $B/kernels
    F="-O2 -gencode=arch=compute_90a,code=sm_90a -Ikernels -Icommon -Ibench/gpu"
    nvcc $F -x cu kernels/probe.cu -lnccl -o $B/kernels/ctx-cuda-probe
    nvcc $F kernels/gemm.cu -x c kernels/ref.c common/err.c tests/kernels/test_gemm.c -lcublasLt -o $B/tests/kernels/test_gemm
    nvcc $F kernels/gemm.cu bench/gpu/floors.cu -x c kernels/ref.c common/err.c bench/gpu/main.c -lcublasLt -o $B/bench/gpu/bench-gpu
fi
cat "$OUT/device.txt"
"$B/tests/kernels/test_gemm" 2>&1 | tee "$OUT/test.txt"
"$B/bench/gpu/bench-gpu" 2>&1 | tee "$OUT/bench.txt"
# A profile of one decode GEMV and one expert product (the report's evidence for what bounds them).
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
    for k in fp8_gemv fp4_gemv; do
        timeout 50 "$NCU" --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis \
            --section WarpStateStats -k regex:$k --launch-skip 20 --launch-count 1 \
            "$B/bench/gpu/bench-gpu" profile >"$OUT/ncu_$k.txt" 2>&1
        grep -E "DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers Per|L2 Cache Throughput|L1/TEX Cache Throughput|Compute \(SM\) Throughput|Stall" "$OUT/ncu_$k.txt" | head -30
    done
fi
