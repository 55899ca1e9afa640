#!/bin/sh
# One GPU-machine call, end to end: the golden-fixture check of model.py, training, export in the
# official format, held-out perplexity of the exported checkpoint. Run from the repository root with
# $OUT set (the device tool's output folder):
#   sh tools/train/device_train.sh smoke 1          # pipeline check on byte tokens of this repository
#   sh tools/train/device_train.sh full 7 DATA_DIR  # the real run on tools/data's data set
# $OUT receives ctx-small/ (config.json, model shards + index), loss.csv, loss.png, report.json,
# fixture.json: at most 8 files of at most 16 MiB each (the tool's limits).
set -eu
MODE=$1
MIN=$2
DATA=${3:-}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
python3 tools/train/fixture_check.py --json "$OUT/fixture.json"
EXTRA=${TRAIN_ARGS:-}
if [ "$MODE" = smoke ]; then
    python3 tools/train/train.py --smoke --minutes "$MIN" --out "$OUT/ctx-small" --log "$OUT/loss.csv" \
        --png "$OUT/loss.png" --report "$OUT/report.json" $EXTRA
else
    python3 tools/train/train.py --data "$DATA" --minutes "$MIN" --out "$OUT/ctx-small" --log "$OUT/loss.csv" \
        --png "$OUT/loss.png" --report "$OUT/report.json" $EXTRA
fi
ls -la "$OUT" "$OUT/ctx-small"
