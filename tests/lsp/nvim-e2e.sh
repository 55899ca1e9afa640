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
# the workspace: a git repository; ctxd answers the agent's first two runs with forced completions
# (teacher forcing): :CtxAsk's answer, then :CtxReview's finding
repo="$dir/repo"
mkdir -p "$repo/src"
printf 'int add(int a, int b)\n{\n    return a - b;\n}\n' > "$repo/src/math.c"
(cd "$repo" && git init -q && git -c user.email=t@example.com -c user.name=T add -A &&
    git -c user.email=t@example.com -c user.name=T commit -q -m one) || exit 1
cat > "$dir/forced.json" <<'EOF'
["</think>The answer is 42.<｜end▁of▁sentence｜>",
 "</think>```findings\n[{\"file\": \"src/math.c\", \"line\": 3, \"severity\": \"warning\", \"message\": \"add subtracts\"}]\n```<｜end▁of▁sentence｜>"]
EOF
HOME="$dir" XDG_RUNTIME_DIR="$dir" "$ctxd" --daemon --socket "$sock" --no-cache --budget 4096 --threads 2 --no-watch \
    --state "$dir" --forced-completions "$dir/forced.json" || exit 1
# no TTY, no user config, nothing inherited but what the test needs
env -i PATH="$PATH" HOME="$dir" XDG_RUNTIME_DIR="$dir" CTX_BIN="$ctx" CTXD_BIN="$ctxd" CTX_TEST_SOCKET="$sock" \
    CTX_TEST_DIR="$dir" CTX_TEST_REPO="$repo" CTX_SOURCE_ROOT="${CTX_SOURCE_ROOT:?}" \
    timeout 60 nvim --headless --clean -c "luafile ${CTX_SOURCE_ROOT}/editors/nvim/test/e2e.lua" </dev/null
rc=$?
[ $rc -ne 0 ] && [ -f "$dir/ctxd.log" ] && sed 's/^/# ctxd: /' "$dir/ctxd.log"
exit $rc
