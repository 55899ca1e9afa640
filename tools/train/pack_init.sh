#!/bin/sh
# xz-compress an exported checkpoint's shards (plus config.json and the index) into DEST, an ignored
# folder for a device call's `carry` (device_continue.sh unpacks it): FP8/FP4 shards shrink about 20%.
#   sh tools/train/pack_init.sh models/ctx-small .out/h4c/init
set -eu
SRC=$1
DEST=$2
mkdir -p "$DEST"
rm -f "$DEST"/*
cp "$SRC/config.json" "$SRC/model.safetensors.index.json" "$DEST/"
for f in "$SRC"/model-*.safetensors; do
    xz -T2 -9e -c "$f" > "$DEST/$(basename "$f").xz.tmp"
    mv "$DEST/$(basename "$f").xz.tmp" "$DEST/$(basename "$f").xz"
done
ls -l "$DEST"
