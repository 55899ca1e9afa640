#!/bin/sh
# Seventeenth session: the decode attention 64 heads a block (k_attn_dtc4, CTX_CUDA_FUSE_ATTN bit 512).
# One call on one H200 after `sh tools/gpu/mkcarry6.sh build-cuda`:
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s19b.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
# test_engine's dtc part (every mode byte-equal to the default, 1023: k_attn_dtc4 against k_attn_dtc), fixture,
# tiny, spec; test_attn; the graph decode step of flash4 with bit sets 511 (k_attn_dtc) and 1023 (k_attn_dtc4)
# alternating at 4K / 128K / 500K (bench-gpu-engine --attn-ab), flash4's stage profile and the 43-layer rows
# with the new default; memcheck of test_engine's memcheck part.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="$PWD/${1:-s6}"
export LD_LIBRARY_PATH="$B:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
T0=$(date +%s)
for p in dtc fixture tiny spec; do
    CTX_ENGINE_PARTS=$p timeout 200 "$B/test_engine" >"$OUT/test_engine_$p.txt" 2>&1
    echo "test_engine $p exit $?: $(grep -c '^ok' "$OUT/test_engine_$p.txt") ok, $(grep -c '^not ok' "$OUT/test_engine_$p.txt") not ok"
    grep '^not ok' "$OUT/test_engine_$p.txt" | head -5
done
timeout 120 "$B/test_attn" >"$OUT/test_attn.txt" 2>&1
echo "test_attn exit $?: $(grep -c '^ok' "$OUT/test_attn.txt") ok, $(grep -c '^not ok' "$OUT/test_attn.txt") not ok"
timeout 300 "$B/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --prefill-max 4096 \
    --attn-ab 511,1023 >"$OUT/decode.txt" 2>&1
echo "bench-gpu-engine exit $? at $(($(date +%s) - T0)) s"
grep -E "^\| flash4|attn|ab|^\|  *[0-9]+ \||Extrapolated|tok/s" "$OUT/decode.txt" | head -40
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ] && [ $(($(date +%s) - T0)) -lt 450 ]; then
    CTX_ENGINE_PARTS=memcheck timeout 100 "$CS" --tool memcheck --error-exitcode 9 "$B/test_engine" >"$OUT/sanitizer.txt" 2>&1
    echo "memcheck exit $?: $(grep 'ERROR SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
fi
echo "s19b in $(($(date +%s) - T0)) s"
