#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): the FP4 GEMV V2 with its prmt table words
# loaded once from shared memory (ptxas had re-materialised the literals every stage). test_gemm (V2
# bit-exact with kernels/ref.c), `bench-gpu fp4` (V1 and every V2 configuration, copy floor of the same
# run), then the flash4 / mid decode rows (graph) with the tree's default paths.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9c.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
SAN=0 NCU=0 sh tools/gpu/fp4dec.sh "$B" 2>&1 | grep -E "exit|^not ok|^\| fp4|^\| kernel" | cut -c1-220
t0=$(date +%s)
{ timeout 80 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile;
  echo "==== mid"; timeout 30 "$B/bench-gpu-engine" --models mid --ctx 4096 --steps 48; } >"$OUT/decode.txt" 2>&1
echo "(ii) decode in $(($(date +%s) - t0)) s"
grep -E "^\| (flash4|mid) |^\| +(4096|131072|500000) \| 0\.|^\| moe experts" "$OUT/decode.txt" | cut -c1-200
