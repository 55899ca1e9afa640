#!/bin/sh
# 2026-11-29 eleventh session, last call (issue 10): test_engine's fixture / tiny / mid / long / pdl parts on
# the final tree (the decisive-rows check allows one flip below 10 decisive rows), test_wo.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s13e.sh s6 2>&1", carry=[".out/s6"], timeout_s=200)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
t0=$(date +%s)
CTX_ENGINE_PARTS=fixture,tiny,mid,long,pdl timeout 150 "$B/test_engine" >"$OUT/test_engine.txt" 2>&1
echo "test_engine exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|decisive rows|flips" "$OUT/test_engine.txt" | cut -c1-250 | head -30
