#!/bin/sh
# A device call of 2026-11-29's tenth session (issue 10): the indexer queries a warp a head
# (k_iq_prep_w, CTX_CUDA_FUSE_ATTN bit 256): (i) test_engine's parts PARTS (default dtc,tiny,mid,long,pdl:
# bit 256 on and off byte-equal; the default against the CPU engine); (ii) the prefill rows
# (bench-gpu-engine --suffix 8192 --ctx 131072,500000: chunk throughput at 4K / 128K / 500K, the 500K
# estimate, the suffix rows, the stage table) with CTX_CUDA_FUSE_ATTN=255 (before) and the default,
# alternating ROUNDS times (default 2) in separate processes; (iii) flash4 decode, --attn-ab AB (default
# 63,255,511: before k_wo_a_ring, before k_iq_prep_w, the default) in one process.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s12e.sh 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
T0=$(date +%s)
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
t0=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-dtc,tiny,mid,long,pdl,idx} timeout ${TEST_TIMEOUT:-200} "$B/test_engine" >"$OUT/tests.txt" 2>&1
say "(i) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
t0=$(date +%s)
timeout 150 "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} --steps ${STEPS:-64} \
    --attn-ab ${AB:-63,255,511} >"$OUT/decode-ab.txt" 2>&1
say "(iii) decode --attn-ab ${AB:-63,255,511} exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| flash4" "$OUT/decode-ab.txt" | cut -c1-200 | tee -a "$S"
for r in $(seq 1 ${ROUNDS:-2}); do
    for m in 255 511; do
        t0=$(date +%s)
        CTX_CUDA_FUSE_ATTN=$m timeout 110 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 \
            >"$OUT/prefill-$m-$r.txt" 2>&1
        say "(ii) prefill CTX_CUDA_FUSE_ATTN=$m round $r exit $? in $(($(date +%s) - t0)) s"
        grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-$m-$r.txt" |
            cut -c1-220 | tee -a "$S"
    done
done
say "total $(($(date +%s) - T0)) s"
