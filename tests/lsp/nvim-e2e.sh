#!/bin/sh
# Neovim end to end (editors/nvim/test/e2e.lua): Neovim's LSP client, the real `ctx lsp` and a real
# ctxd on a temporary socket. Skips (77) where nvim is not installed. $1 = ctx, $2 = ctxd.
set -u
ctx=$1
ctxd=$2
command -v nvim >/dev/null 2>&1 || { echo "1..0 # SKIP nvim is not installed"; exit 77; }
dir=$(mktemp -d /tmp/ctx-nvim-XXXXXX)
sock="$dir/ctxd.sock"
cleanup() {
    "$ctx" --socket "$sock" stop >/dev/null 2>&1
    rm -rf "$dir"
}
trap cleanup EXIT
# no TTY, no user config, nothing inherited but what the test needs
env -i PATH="$PATH" HOME="$dir" XDG_RUNTIME_DIR="$dir" CTX_BIN="$ctx" CTXD_BIN="$ctxd" CTX_TEST_SOCKET="$sock" \
    CTX_TEST_DIR="$dir" CTX_SOURCE_ROOT="${CTX_SOURCE_ROOT:?}" \
    timeout 60 nvim --headless --clean -c "luafile ${CTX_SOURCE_ROOT}/editors/nvim/test/e2e.lua" </dev/null
rc=$?
[ $rc -ne 0 ] && [ -f "$dir/ctxd.log" ] && sed 's/^/# ctxd: /' "$dir/ctxd.log"
exit $rc
