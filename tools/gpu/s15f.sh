#!/bin/sh
# 2026-11-29 thirteenth session, the final tree with k_attn_hwg (every block by cp.async, the queries loaded 8
# at a time; issue 10): s15c.sh with session6.sh's budget at 330 s, then k_attn_hwg's launches timed
# (hwg_times.sh).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s15f.sh s6 2>&1", carry=[".out/s6"], timeout_s=590)
B=${1:-s6}
BUDGET=${BUDGET:-330} sh tools/gpu/s15c.sh "$B"
sh tools/gpu/hwg_times.sh "$B"
