#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), on nvidia-h200-x2: V4-Flash's 43 layers
# and its MTP block over both GPUs through the accelerator as ctxd runs them (bench-gpu-spec --full):
# plain and speculative decoding at acceptance p, measured at 4K and 128K.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20f.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
t=$(date +%s)
timeout ${SPEC_TIMEOUT:-360} "$C/bench-gpu-spec" --full --ctx ${CTXS:-4096,131072} --tokens 64 2>&1 | tee "$OUT/spec-full.txt"
echo "bench-gpu-spec --full: exit $? in $(($(date +%s) - t)) s"
