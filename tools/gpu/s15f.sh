#!/bin/sh
# 2026-11-29 thirteenth session, the final tree with k_attn_hwg (every block by cp.async, the queries loaded 8
# at a time; issue 10): session6.sh over the tree (every
# GPU test with test_engine's parts PARTS, wg included; the prefill tables; decode rows; memcheck;
# bench-gpu if time is left), then compute-sanitizer's memcheck and racecheck on test_attn's quick wgmma
# cases (CTX_ATTN_QUICK=1), then the prefill tables once more with k_attn_tc (CTX_CUDA_ATTN_WG=0).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15f.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
RESTORE=0 PARTS=${PARTS:-topk,fixture,tiny,mid,long,pdl,idx,c16,wg,moe,mhc,afuse,dtc} BUDGET=${BUDGET:-330} \
    sh tools/gpu/session6.sh "$B"
grep -E "^# (synthetic|fixture: |chunked)|^not ok" "$OUT/tests.txt" | cut -c1-250 | head -30
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for tool in memcheck racecheck; do
    t0=$(date +%s)
    CTX_ATTN_QUICK=1 timeout 60 "$CS" --tool $tool --error-exitcode 9 "$B/test_attn" >"$OUT/attn-$tool.txt" 2>&1
    echo "test_attn quick under $tool: exit $? in $(($(date +%s) - t0)) s: $(grep -c '^ok' "$OUT/attn-$tool.txt") ok, $(grep -c '^not ok' "$OUT/attn-$tool.txt") not ok"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Invalid" "$OUT/attn-$tool.txt" | head -4
done
t0=$(date +%s)
CTX_CUDA_ATTN_WG=0 timeout 60 "$B/bench-gpu-engine" --suffix 8192 --ctx 131072,500000 >"$OUT/prefill-wg0.txt" 2>&1
echo "prefill bench, CTX_CUDA_ATTN_WG=0: exit $? in $(($(date +%s) - t0)) s"
grep -E "^\| (4096|131072|500000) \||^Full" "$OUT/prefill-wg0.txt" | cut -c1-260 | head -12
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
timeout 100 "$NCU" --clock-control none -k regex:k_attn_hwg --metrics gpu__time_duration.sum --csv --page raw \
    "$B/bench-gpu-engine" --suffix 2048 --ctx 500000 >"$OUT/ncu_light.csv" 2>"$OUT/ncu_light.err"
python3 - "$OUT/ncu_light.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1]))]
hi = [i for i, r in enumerate(rows) if r and r[0] == "ID"][0]
ti = rows[hi].index("gpu__time_duration.sum")
d = [float(r[ti].replace(",", "")) / 1e3 for r in rows[hi + 2:] if len(r) > ti and "k_attn_hwg" in r[4]]
print("k_attn_hwg launches:", len(d), "; the first 4 (4K chunk: swa, swa, csa, hca) us:", [round(x) for x in d[:4]],
      "; the longest us:", round(max(d)))
PY
