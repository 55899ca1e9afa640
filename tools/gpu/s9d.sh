#!/bin/sh
# A device call of 2026-11-29's seventh session (issue 10): (1) the FP4 GEMV V2 with its prmt table words
# from an opaque shared load (test_gemm, `bench-gpu fp4`); (2) Nsight Compute's time of the decode
# attention kernels (k_attn_score, k_attn_pv, k_attn_combine) of flash4 at 128K and 500K (filled states;
# caches left warm, clocks alone), to see which of them grows with an HCA layer's list.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s9d.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
SAN=0 NCU=0 sh tools/gpu/fp4dec.sh "$B" 2>&1 | grep -E "exit|^not ok|engine S=1|^\| kernel" | grep -E "exit|not ok|v2 int8|v1 e4m3|kernel" | cut -c1-200
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for ctx in 131072 500000; do
    t=$(date +%s)
    timeout 150 "$NCU" --clock-control none --cache-control none -k regex:k_attn --metrics gpu__time_duration.sum \
        --csv --page raw -c 60 "$B/bench-gpu-engine" --models flash4 --ctx $ctx --steps 2 >"$OUT/ncu_attn_$ctx.csv" 2>"$OUT/ncu_attn_$ctx.err"
    echo "ncu $ctx: exit $? in $(($(date +%s) - t)) s"
    python3 - "$OUT/ncu_attn_$ctx.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
st = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
if st is None: sys.exit("no rows")
rows = [r for r in csv.DictReader(lines[st:]) if r.get("ID", "").isdigit()]
for r in rows[-24:]:
    print("%8.2f  %-28s grid %s block %s" % (float(r["gpu__time_duration.sum"].replace(",", "")) / 1000, r["Kernel Name"].split("(")[0][:28], r["Grid Size"], r["Block Size"]))
PY
done
