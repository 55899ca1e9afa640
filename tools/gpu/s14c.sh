#!/bin/sh
# 2026-11-29 twelfth session, fourth call (issue 10): A/B of V7's CTA shape, bench-gpu moe at S = 512 /
# 2048 / 8192 with a temporary V8 (V7 with 64-row CTAs of one warpgroup, four CTAs an SM) against V7
# (128 rows, two CTAs an SM), timed before and after it; V8's bytes against V7's.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s14c.sh s6 2>&1", carry=[".out/s6"], timeout_s=200)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH"
for s in 512 2048 8192; do timeout 60 "$B/bench-gpu" moe $s; done >"$OUT/moe.txt" 2>&1
grep -E "^\| (V[6-8]|CTAs)|^\(CTAs" "$OUT/moe.txt" | cut -c1-200
