#!/bin/sh
# A device call of 2026-11-30's twenty-first session (issue 10): where a flash4 4096-token prefill chunk's
# GPU time goes with k_attn_hsw, kernel by kernel (Nsight Compute's duration of every launch, one at a
# time, caches and clocks left alone; tools/gpu/ncu_chunk.py), at POSITIONS (default 4096 500000), and
# every attention launch in order (k_attn_hsw and the staging copies around it).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s23c.sh s6 2>&1", carry=[".out/s6"], timeout_s=400)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size
for P in ${POSITIONS:-4096 500000}; do
    t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$P timeout ${NCU_TIMEOUT:-200} "$NCU" --profile-from-start off --cache-control none \
        --clock-control none --metrics $M --csv --page raw "$C/bench-gpu-engine" --suffix 4096 --ctx $P \
        >"$OUT/ncu_chunk_$P.csv" 2>"$OUT/ncu_chunk_$P.err"
    echo "ncu chunk at $P: exit $? in $(($(date +%s) - t)) s"
    tail -2 "$OUT/ncu_chunk_$P.err"
    python3 tools/gpu/ncu_chunk.py "$OUT/ncu_chunk_$P.csv" | tee "$OUT/chunk_$P.txt" | head -30
    echo "attention launches in order at $P (us, grid):"
    python3 - "$OUT/ncu_chunk_$P.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
for r in csv.DictReader(lines[start:]):
    if not r.get("ID", "").isdigit():
        continue
    n = r["Kernel Name"].split("(")[0].replace("<unnamed>::", "").replace("void ", "")
    if any(k in n for k in ("attn", "stage")):
        print("  %-28s %9.1f  %s" % (n, float(r["gpu__time_duration.sum"].replace(",", "")) / 1000, r["launch__grid_size"]))
PY
    xz -6 "$OUT/ncu_chunk_$P.csv"
done
