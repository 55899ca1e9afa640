#!/bin/bash
# One GPU-machine call that continues training ctx-small from its exported checkpoint (device call 4).
# The working tree travels without the model shards (moved out for the call: the tree and the carried
# paths must stay under 64 MiB), so the initial weights come xz-compressed in INIT_PACK (made by
# pack_init.sh), beside the data pack (pack_data.sh). Run from the repository root with $OUT set:
#   bash tools/train/device_continue.sh MINUTES DATA_PACK INIT_PACK [train.py options...]
# $OUT receives ctx-small/ (config.json, 2 shards, index), loss.csv (both runs), loss.png, report.json,
# train.log: 8 files, the run tool's limit.
set -euo pipefail
MIN=$1
DATA=$2
PACK=$3
shift 3
export PYTHONUNBUFFERED=1
INIT=/tmp/ctx-small-init
mkdir -p "$INIT"
cp "$PACK/config.json" "$PACK/model.safetensors.index.json" "$INIT/"
for f in "$PACK"/*.safetensors.xz; do
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$f" "$INIT/$(basename "$f" .xz)"
done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
python3 tools/train/train.py --data "$DATA" --init "$INIT" --minutes "$MIN" --prev-log docs/ctx-small-loss.csv \
    --out "$OUT/ctx-small" --log "$OUT/loss.csv" --png "$OUT/loss.png" --report "$OUT/report.json" "$@" \
    2>&1 | tee "$OUT/train.log"
ls -la "$OUT" "$OUT/ctx-small"
