#!/bin/sh
# A device call of 2026-11-30's twentieth session (issue 10): s22b.sh's checks and timings of k_topk_row
# (test_engine topk,idx; memcheck; flash4's chunks with both top-k routes), then Nsight Compute's SASS page
# on its first launch in a flash4 chunk at 500000 (s22a.sh), and racecheck on the segmented route's
# launches of the same test (whether the sanitizer's failure is k_topk_row's).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s22c.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
SAN_RUNS="memcheck:0" SAN_LAUNCHES=${SAN_LAUNCHES:-40} sh tools/gpu/s22b.sh "$C"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
t=$(date +%s)
CTX_CUDA_TOPK_ROW=0 CTX_ENGINE_PARTS=topk timeout 200 "$CS" --tool racecheck --kernel-name kns=k_topk_seg --launch-count 3 \
    "$C/test_engine" >"$OUT/san_racecheck_seg.txt" 2>&1
echo "compute-sanitizer racecheck (k_topk_seg launches): exit $? in $(($(date +%s) - t)) s"
grep -E "RACECHECK SUMMARY|hazard|Internal" "$OUT/san_racecheck_seg.txt" | head -3
[ -n "$NO_NCU" ] || KERNELS=row:k_topk_row sh tools/gpu/s22a.sh "$C" | head -34
