#!/bin/sh
# 2026-11-29 thirteenth session, k_attn_hwg on every layer type (issue 10), second call: s15a.sh with the
# masks 7 (every layer type, the default), 4 (HCA layers only) and 0 (k_attn_tc).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15b.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
MASKS="7 4 0" exec sh tools/gpu/s15a.sh "$@"
