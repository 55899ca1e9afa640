#!/bin/sh
# A device call of 2026-11-29's ninth session (issue 10): a one-token decode step's CSA indexer and the
# compressors' products on side streams (CTX_CUDA_FUSE_ATTN bits 16 (CSA) and 32 (HCA), attention()). test_engine's parts
# PARTS (default dtc,afuse,tiny,pdl: every mode bit-identical to the default), its memcheck part under
# compute-sanitizer, then the decode rows of bench-gpu-engine (flash4, --profile: its stage times are of the serial launches, bits 16 and 32 being off while profiling) with
# CTX_CUDA_FUSE_ATTN = each of MODES (default 15: bits 16 and 32 off, 31: CSA only, 47: HCA only, 63: the
# default), ROUNDS times (default 1).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s11a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
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
CTX_ENGINE_PARTS=${PARTS:-dtc,afuse,tiny,pdl} timeout ${TEST_TIMEOUT:-200} "$B/test_engine" >"$OUT/tests.txt" 2>&1
say "(i) test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/tests.txt") ok, $(grep -c '^not ok' "$OUT/tests.txt") not ok"
grep "^not ok" "$OUT/tests.txt" | cut -c1-300 | head -10 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t0=$(date +%s)
    CTX_ENGINE_PARTS=memcheck timeout 90 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
    say "(ii) memcheck exit $? in $(($(date +%s) - t0)) s: $(grep -c 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer.txt") clean summaries"
    grep -E "ERROR SUMMARY|Invalid|^not ok" "$OUT/sanitizer.txt" | head -6 | tee -a "$S"
fi
for r in $(seq 1 ${ROUNDS:-1}); do
    for m in ${MODES:-15 31 47 63}; do
        t0=$(date +%s)
        CTX_CUDA_FUSE_ATTN=$m timeout 120 "$B/bench-gpu-engine" --models flash4 --ctx ${CTXS:-4096,131072,500000} \
            --steps ${STEPS:-48} ${PROFILE---profile} >"$OUT/decode-$m-$r.txt" 2>&1
        say "(iii) decode CTX_CUDA_FUSE_ATTN=$m round $r exit $? in $(($(date +%s) - t0)) s"
        grep -E "^\| flash4|^\| +[0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \||^by layer" "$OUT/decode-$m-$r.txt" | cut -c1-200 | tee -a "$S"
    done
done
say "total $(($(date +%s) - T0)) s"
