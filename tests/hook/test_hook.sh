#!/bin/sh
# `ctx hook` in temporary git repositories: install/uninstall/idempotence, a foreign hook (refused,
# then kept and chained with --force, restored on uninstall), core.hooksPath, SKIP=ctx/CTX_HOOK=0,
# the timeout path against a socket that accepts and never answers (gives up in the configured
# time; strict blocks), and the real hook through `git commit` with a ctxd started with
# --forced-completions: blocked on an error finding, allowed on a warning with failOn=error,
# blocked on it with failOn=warning. Prints TAP.
# usage: test_hook.sh PATH_TO_CTX PATH_TO_CTXD
set -u
CTX=$1
CTXD=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/ctx-hook-XXXXXX")
SRV=
DPID=
cleanup() {
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
    if [ -n "$DPID" ]; then
        kill "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap "exit 1" INT TERM  # so that cleanup runs when meson stops the test
export HOME=$T GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=T GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=T GIT_COMMITTER_EMAIL=t@e
unset SKIP CTX_HOOK CTX_HOOK_TIMEOUT
# Every ctx and ctxd of this test uses this socket; nothing reaches a user's daemon.
export CTXD_SOCKET=$T/s/ctxd.sock
export CTXD_BIN=$CTXD
mkdir -p "$T/s"
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; for f in "$T"/out "$T"/err; do [ -s "$f" ] && sed 's/^/# /' "$f"; done; fi; }

echo "1..30"

newrepo() {
    rm -rf "$T/r" && mkdir -p "$T/r" && cd "$T/r" && git init -q . &&
        printf 'int add(int a, int b)\n{\n    return a + b;\n}\n' > a.c && git add a.c && git commit -qm base
}

# ---- install / uninstall / idempotence ----
newrepo
H=$T/r/.git/hooks/pre-commit
"$CTX" hook install > "$T/out" 2> "$T/err"; rc=$?
check "install exits 0" "[ $rc -eq 0 ]"
check "install writes an executable pre-commit that runs ctx hook run" \
    "[ -x '$H' ] && grep -q 'ctx-hook: installed by' '$H' && grep -q 'hook run' '$H'"
cp "$H" "$T/hook1"
"$CTX" hook install > "$T/out" 2> "$T/err"; rc=$?
check "a second install is idempotent (exit 0, same bytes, says so)" \
    "[ $rc -eq 0 ] && cmp -s '$H' '$T/hook1' && grep -q 'already installed' '$T/out'"
"$CTX" --json hook status > "$T/out" 2> "$T/err"
check "status --json: installed, not chained, defaults" \
    "grep -q '\"state\":\"installed\",\"chained\":false,\"fail_on\":\"error\",\"timeout_s\":120,\"timeout_from\":\"default\",\"strict\":false' '$T/out'"
"$CTX" hook uninstall > "$T/out" 2> "$T/err"; rc=$?
check "uninstall removes the hook" "[ $rc -eq 0 ] && [ ! -e '$H' ]"
"$CTX" hook uninstall > "$T/out" 2> "$T/err"; rc=$?
check "uninstall without a hook is a no-op (exit 0)" "[ $rc -eq 0 ] && grep -q 'nothing to do' '$T/out'"

# ---- a foreign hook ----
printf '#!/bin/sh\necho foreign-ran >> "%s/foreign.log"\nexit 0\n' "$T" > "$H"
chmod +x "$H"
cp "$H" "$T/foreign"
"$CTX" hook install > "$T/out" 2> "$T/err"; rc=$?
check "install refuses to overwrite a foreign hook (exit 1, hook untouched, says --force)" \
    "[ $rc -eq 1 ] && cmp -s '$H' '$T/foreign' && grep -q -- '--force' '$T/err'"
"$CTX" hook install --force > "$T/out" 2> "$T/err"; rc=$?
check "install --force keeps the foreign hook as pre-commit.ctx-backup" \
    "[ $rc -eq 0 ] && cmp -s '$T/r/.git/hooks/pre-commit.ctx-backup' '$T/foreign' && grep -q 'ctx-hook' '$H'"
"$CTX" hook install --force > "$T/out" 2> "$T/err"; rc=$?
check "install --force again is idempotent (the backup is not clobbered)" \
    "[ $rc -eq 0 ] && cmp -s '$T/r/.git/hooks/pre-commit.ctx-backup' '$T/foreign'"
"$CTX" --json hook status > "$T/out" 2> "$T/err"
check "status reports the chain" "grep -q '\"state\":\"installed\",\"chained\":true' '$T/out'"
echo 'int x;' > b.c && git add b.c
CTX_HOOK=0 git commit -qm chained > "$T/out" 2> "$T/err"; rc=$?
check "git commit runs the chained foreign hook, then ctx's (skipped by CTX_HOOK=0)" \
    "[ $rc -eq 0 ] && grep -q foreign-ran '$T/foreign.log' && grep -q 'review skipped (CTX_HOOK=0)' '$T/err'"
printf '#!/bin/sh\necho foreign-failed >&2\nexit 7\n' > "$T/r/.git/hooks/pre-commit.ctx-backup"
echo 'int y;' >> b.c && git add b.c
CTX_HOOK=0 git commit -qm chained2 > "$T/out" 2> "$T/err"; rc=$?
check "a failing chained hook blocks the commit before ctx runs" \
    "[ $rc -ne 0 ] && grep -q foreign-failed '$T/err' && ! grep -q 'ctx hook' '$T/err'"
cp "$T/foreign" "$T/r/.git/hooks/pre-commit.ctx-backup"
"$CTX" hook uninstall > "$T/out" 2> "$T/err"; rc=$?
check "uninstall restores the foreign hook" \
    "[ $rc -eq 0 ] && cmp -s '$H' '$T/foreign' && [ ! -e '$T/r/.git/hooks/pre-commit.ctx-backup' ]"
"$CTX" hook uninstall > "$T/out" 2> "$T/err"; rc=$?
check "uninstall leaves a foreign hook alone (exit 1)" "[ $rc -eq 1 ] && cmp -s '$H' '$T/foreign'"
git reset -q HEAD b.c 2>/dev/null; rm -f b.c

# ---- core.hooksPath ----
newrepo
git config core.hooksPath ci-hooks
"$CTX" hook install > "$T/out" 2> "$T/err"; rc=$?
check "core.hooksPath: the hook goes to that directory (created), not .git/hooks" \
    "[ $rc -eq 0 ] && grep -q ctx-hook '$T/r/ci-hooks/pre-commit' && [ ! -e '$T/r/.git/hooks/pre-commit' ]"
"$CTX" hook uninstall > "$T/out" 2> "$T/err"; rc=$?
check "core.hooksPath: uninstall removes it there" "[ $rc -eq 0 ] && [ ! -e '$T/r/ci-hooks/pre-commit' ]"
git config --unset core.hooksPath

# ---- skipping, bad settings ----
"$CTX" hook install > /dev/null 2>&1
echo 'int z;' > c.c && git add c.c
SKIP=flake8,ctx git commit -qm skipped > "$T/out" 2> "$T/err"; rc=$?
check "SKIP=...,ctx skips the review and commits" "[ $rc -eq 0 ] && grep -q 'review skipped (SKIP=ctx)' '$T/err'"
git config ctx.failOn sometimes
"$CTX" hook run > "$T/out" 2> "$T/err"; rc=$?
check "a bad ctx.failOn is a usage error naming the key (exit 2)" \
    "[ $rc -eq 2 ] && grep -q 'ctx.failOn is \"sometimes\"' '$T/err'"
git config --unset ctx.failOn
CTX_HOOK_TIMEOUT=soon "$CTX" hook run > "$T/out" 2> "$T/err"; rc=$?
check "a bad CTX_HOOK_TIMEOUT is a usage error (exit 2)" "[ $rc -eq 2 ] && grep -q 'CTX_HOOK_TIMEOUT is \"soon\"' '$T/err'"

# ---- the timeout path: a "daemon" that accepts and never answers ----
python3 - "$CTXD_SOCKET" <<'EOF' &
import os, socket, sys, time
p = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(p)
s.listen(16)
held = []
while True:
    c, _ = s.accept()
    held.append(c)  # keep it open, say nothing
EOF
SRV=$!
i=0
while [ ! -S "$CTXD_SOCKET" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo 'int w;' > d.c && git add d.c
t0=$(date +%s)
CTX_HOOK_TIMEOUT=2 git commit -qm silent > "$T/out" 2> "$T/err"; rc=$?
t1=$(date +%s)
check "silent daemon: the hook gives up after CTX_HOOK_TIMEOUT=2 s and lets the commit through" \
    "[ $rc -eq 0 ] && grep -q 'did not finish within 2 s (CTX_HOOK_TIMEOUT)' '$T/err' && grep -q 'commit allowed' '$T/err'"
check "silent daemon: it gave up in about the configured time ($((t1 - t0)) s)" "[ $((t1 - t0)) -ge 2 ] && [ $((t1 - t0)) -le 8 ]"
git config ctx.hookTimeout 1
git config ctx.hookStrict true
echo 'int v;' > e.c && git add e.c
t0=$(date +%s)
git commit -qm strict > "$T/out" 2> "$T/err"; rc=$?
t1=$(date +%s)
check "ctx.hookStrict=true: giving up blocks the commit (ctx.hookTimeout=1 named)" \
    "[ $rc -ne 0 ] && grep -q 'did not finish within 1 s (ctx.hookTimeout)' '$T/err' && grep -q 'commit blocked' '$T/err' && [ $((t1 - t0)) -le 6 ]"
"$CTX" hook run --timeout 0.5 > "$T/out" 2> "$T/err"; rc=$?
check "--timeout overrides the config" "[ $rc -eq 1 ] && grep -q 'within 0.5 s (--timeout)' '$T/err'"
git config --unset ctx.hookStrict
git config --unset ctx.hookTimeout
kill "$SRV" 2>/dev/null
wait "$SRV" 2>/dev/null
SRV=
rm -f "$CTXD_SOCKET"
git reset -q HEAD e.c; rm -f e.c

# ---- no daemon: the hook starts one (the bundled default model), then gives up in time ----
echo 'int u;' > u.c && git add u.c
t0=$(date +%s)
"$CTX" hook run --timeout 4 > "$T/out" 2> "$T/err"; rc=$?
t1=$(date +%s)
check "no daemon running: the hook started ctxd (it answers afterwards)" "[ -S '$CTXD_SOCKET' ] && '$CTX' ping > /dev/null 2>&1"
check "...and, its review unfinished after --timeout 4, let the commit through in time ($((t1 - t0)) s)" \
    "[ $rc -eq 0 ] && [ $((t1 - t0)) -le 12 ] && grep -q 'commit allowed' '$T/err'"
"$CTX" stop > /dev/null 2>&1
i=0
while [ -S "$CTXD_SOCKET" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
git reset -q HEAD u.c; rm -f u.c

# ---- the real hook through git commit, with a ctxd forced to emit review findings ----
# Forced completions are used in order across requests: error, warning, warning.
python3 - "$T/forced.json" <<'EOF'
import json, sys
fe = [{"file": "f.c", "line": 2, "severity": "error", "message": "returns an uninitialised value",
       "replacement": "    return 0;\n"}]
fw = [{"file": "f.c", "line": 2, "severity": "warning", "message": "magic number"}]
# As the model writes it: end of (empty) reasoning, the answer, end of sentence.
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
block = lambda f: "</think>```findings\n" + json.dumps(f) + "\n```" + EOS
json.dump([block(fe), block(fw), block(fw)], open(sys.argv[1], "w"))
EOF
"$CTXD" --socket "$CTXD_SOCKET" --forced-completions "$T/forced.json" --no-cache --state "$T/state" \
    --no-watch --threads 2 --budget 4096 --log "$T/ctxd.log" 2>/dev/null &
DPID=$!
i=0
while [ ! -S "$CTXD_SOCKET" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
check "ctxd with --forced-completions is listening" "[ -S '$CTXD_SOCKET' ]"
# The first review makes the repository resident on the CPU engine (about 10 s on 2 cores); a
# failure must show up as a failed check, not as the default 120 s give-up.
export CTX_HOOK_TIMEOUT=90
printf 'int f(void)\n{\n    int x;\n    return x;\n}\n' > f.c && git add f.c
head0=$(git rev-parse HEAD)
git commit -m 'with error' > "$T/out" 2> "$T/err"; rc=$?
cat "$T/out" >> "$T/err"
check "error finding: the commit is blocked (exit 1) with the finding printed" \
    "[ $rc -ne 0 ] && grep -q 'f.c:2: error: returns an uninitialised value' '$T/err' && grep -q 'commit blocked' '$T/err'"
check "error finding: nothing was committed" "[ \"\$(git rev-parse HEAD)\" = '$head0' ]"
git commit -m 'with warning' > "$T/out" 2> "$T/err"; rc=$?
cat "$T/out" >> "$T/err"
check "warning finding with ctx.failOn=error (default): the commit goes through, the finding is shown" \
    "[ $rc -eq 0 ] && grep -q 'f.c:2: warning: magic number' '$T/err' && [ \"\$(git log --format=%s -1)\" = 'with warning' ]"
printf 'int g(void)\n{\n    return 42;\n}\n' > g.c && git add g.c
git config ctx.failOn warning
git commit -m 'warning blocks' > "$T/out" 2> "$T/err"; rc=$?
cat "$T/out" >> "$T/err"
check "warning finding with ctx.failOn=warning: blocked" \
    "[ $rc -ne 0 ] && grep -q 'magic number' '$T/err' && grep -q 'at or above \"warning\"' '$T/err'"
git config --unset ctx.failOn
[ $fail -eq 0 ] && [ -f "$T/ctxd.log" ] || { [ -f "$T/ctxd.log" ] && tail -20 "$T/ctxd.log" | sed 's/^/# ctxd: /'; }
exit $fail
