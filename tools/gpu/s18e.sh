#!/bin/sh
# 2026-11-30 sixteenth session (issue 10): ctx model generate on the GPU. ctx and test_forward_cli from a
# build without the daemon (meson setup build-cli -Dcuda=enabled -Ddaemon=disabled; ninja -C build-cli
# cli/ctx tests/inference/test_forward_cli), carried with the libraries the GPU image lacks as
# .out/cli/carry.tar.xz (folder c/): test_forward_cli (plain and --spec the same tokens), then the
# command itself on the fixture and on synthetic tiny, plain and --spec, text and --json.
#   run(command="tar -xJf .out/cli/carry.tar.xz && sh tools/gpu/s18e.sh c 2>&1", carry=[".out/cli"], timeout_s=200)
B=${1:-c}
export LD_LIBRARY_PATH="$PWD/$B:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
"$B/test_forward_cli" "$B/ctx" 2>&1 | tail -8
printf '[0, 11, 22, 33, 44, 55, 66, 77]' > /tmp/prompt.json
for m in tests/fixtures/v4-tiny-a "--synthetic tiny"; do
  "$B/ctx" model generate $m --input /tmp/prompt.json --max-tokens 40
  "$B/ctx" model generate $m --input /tmp/prompt.json --max-tokens 40 --spec
  "$B/ctx" model generate $m --input /tmp/prompt.json --max-tokens 40 --spec --json
done
"$B/ctx" model generate models/ctx-small --input /tmp/prompt.json --max-tokens 8 --spec; echo "exit $? (ctx-small has no MTP block)"
"$B/ctx" model generate models/ctx-small --input /tmp/prompt.json --max-tokens 16 --json
