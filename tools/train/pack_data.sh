#!/bin/sh
# Pack tools/data's data set for a device call: xz-compress what train.py reads into DEST (an ignored
# folder, carried with the run tool's `carry`). The working tree and the carried paths together must
# stay under 64 MiB. XZ_LEVEL (default -6) sets the preset: -9e (64 MiB dictionary) shrinks a
# transcript-heavy set far more, since transcripts of one repository repeat its prompt.
#   sh tools/train/pack_data.sh build-data .out/h4b-data
#   XZ_LEVEL=-9e sh tools/train/pack_data.sh build-data-h6 .out/h6/data
set -eu
SRC=$1
DEST=$2
mkdir -p "$DEST"
rm -f "$DEST"/*
for f in train.bin train.mask train.idx val.bin val.mask val.idx heldout_code.jsonl; do
    if [ -f "$SRC/$f" ]; then
        xz -T2 ${XZ_LEVEL:--6} -c "$SRC/$f" > "$DEST/$f.xz.tmp"
        mv "$DEST/$f.xz.tmp" "$DEST/$f.xz"
    fi
done
ls -l "$DEST"
du -cb "$DEST"/* | tail -1
