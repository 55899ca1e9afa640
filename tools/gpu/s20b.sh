#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), on nvidia-h200-x2: V4-Flash's 43 layers
# on synthetic weights over both GPUs, measured (bench-gpu-engine --full): decode at 4K / 128K / 500K,
# the 8K suffix at 128K / 500K, and the 500K prefill from position 0 with the indexer's share.
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s20b.sh s6 2>&1", carry=[".out/s6"],
#       kind="nvidia-h200-x2", timeout_s=590)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
free -g | head -2
nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 1000 >"$OUT/smi.csv" 2>&1 &
SMI=$!
t=$(date +%s)
timeout ${FULL_TIMEOUT:-560} "$C/bench-gpu-engine" --full ${FULL_ARGS:-} 2>&1 | tee "$OUT/full.txt"
echo "bench-gpu-engine --full: exit $? in $(($(date +%s) - t)) s"
kill $SMI 2>/dev/null
python3 - "$OUT/smi.csv" <<'PY'
import csv, collections, sys
rows = list(csv.reader(open(sys.argv[1])))[1:]
by = collections.defaultdict(list)
for r in rows:
    if len(r) < 7:
        continue
    try:
        by[r[1].strip()].append((float(r[2].split()[0]), float(r[4].split()[0]), r[6].strip()))
    except ValueError:
        pass
for g, v in sorted(by.items()):
    busy = [x for x in v if x[1] > 200]
    if busy:
        cl = sorted(x[0] for x in busy)
        pw = sorted(x[1] for x in busy)
        print(f"GPU {g}: {len(busy)} busy samples (> 200 W): SM clock MHz min {cl[0]:.0f} median {cl[len(cl)//2]:.0f} "
              f"max {cl[-1]:.0f}; power W median {pw[len(pw)//2]:.0f} max {pw[-1]:.0f}; throttle reasons "
              f"{collections.Counter(x[2] for x in busy).most_common(3)}")
PY

