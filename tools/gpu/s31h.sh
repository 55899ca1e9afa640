#!/bin/sh
# A device call of 2026-12-01's twenty-ninth session (issue 10), on nvidia-h200: test_accel's other half (the tree
# carries models/ctx-small this time, not tests/fixtures/v4-tiny-a).
#   run(command="tar -xJf .out/s7/carry.tar.xz && OUT=$OUT sh tools/gpu/s31h.sh s7 2>&1", carry=[".out/s7"],
#       kind="nvidia-h200", timeout_s=200)
. tools/gpu/lib.sh
gpu_setup "$1"
gpu_test test_accel 150
[ -f "$OUT/test_accel.txt" ] && xz -6 "$OUT/test_accel.txt"
true
