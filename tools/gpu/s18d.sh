#!/bin/sh
# 2026-11-30 sixteenth session, the final tree (issue 10): the MTP block and speculative decoding, the
# fused FP8 GEMV for two tokens (its one-token kernel a template instance of its own, as before).
# session6.sh over the tree (every GPU test, test_engine with all its parts including "spec"; the prefill
# tables; no restore rows: restore did not change), bench-gpu-spec at 4K / 128K / 500K, then the decode
# rows and compute-sanitizer memcheck (s16f.sh's part).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s18d.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,wg,moe,mhc,afuse,dtc,spec} BUDGET=${BUDGET:-330} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture: |chunked)|^not ok|fp8_gemv_f32 m=2|spec: .*(same state|GPU vs the CPU)" "$OUT/tests.txt" | cut -c1-250 | head -40
t0=$(date +%s)
timeout 100 "$B/bench-gpu-spec" --ctx 4096,131072,500000 --tokens 64 >"$OUT/spec.txt" 2>&1
echo "bench-gpu-spec: exit $? in $(($(date +%s) - t0)) s"
cat "$OUT/spec.txt"
OUT="$OUT" sh tools/gpu/s16f.sh "$B"
