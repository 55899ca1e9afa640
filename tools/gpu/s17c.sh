#!/bin/sh
# 2026-11-30 fifteenth session, the final tree (issue 10): V8 for chunks whose experts average more than
# 64 pairs, prefill slices of 4096 (the CUDA accelerator, ctxd, bench-gpu-engine --suffix's default).
# session6.sh over the tree (every GPU test with all of test_engine's parts; the prefill tables at the
# new default chunk of 4096; no restore rows: restore did not change), then the prefill tables with
# chunks of 8192 (allowed since this session: the engine's limit is now the grouped GEMM's tile grid),
# the decode rows and compute-sanitizer memcheck (s16f.sh's part).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s17c.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,wg,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-330} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture: |chunked)|^not ok|max_chunk 16M|V8" "$OUT/tests.txt" | cut -c1-250 | head -30
t0=$(date +%s)
timeout 110 "$B/bench-gpu-engine" --suffix 8192 --chunk 8192 --ctx 131072,500000 >"$OUT/prefill-8192.txt" 2>&1
echo "prefill bench, chunks of 8192: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-8192.txt" | cut -c1-260 | head -12
OUT="$OUT" sh tools/gpu/s16f.sh "$B"
