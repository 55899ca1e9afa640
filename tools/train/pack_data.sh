#!/bin/sh
# Pack tools/data's data set for a device call: xz-compress what train.py reads into DEST (an ignored
# folder, carried with the run tool's `carry`). The working tree and the carried paths together must
# stay under 64 MiB.
#   sh tools/train/pack_data.sh build-data .out/h4b-data
set -eu
SRC=$1
DEST=$2
mkdir -p "$DEST"
rm -f "$DEST"/*
for f in train.bin train.mask train.idx val.bin val.mask val.idx heldout_code.jsonl; do
    if [ -f "$SRC/$f" ]; then
        xz -T2 -6 -c "$SRC/$f" > "$DEST/$f.xz.tmp"
        mv "$DEST/$f.xz.tmp" "$DEST/$f.xz"
    fi
done
ls -l "$DEST"
du -cb "$DEST"/* | tail -1
