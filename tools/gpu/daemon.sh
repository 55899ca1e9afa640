#!/bin/sh
# ctxd end to end on the GPU machine, --backend local (the CPU engine) against --backend cuda, in one
# call: the bundled model (models/ctx-small) ingests a small git repository, keeps it resident,
# answers the same questions through the agent on both backends, then restarts and restores the
# resident state from the KV cache. Prints a table (prefill tok/s, time to first token, decode tok/s,
# the answers) and leaves the JSON under $OUT.
#   tools/gpu/mkcarry-daemon.sh here, then
#   run(command="tar -xJf .out/dm/carry.tar.xz && sh tools/gpu/daemon.sh dm 2>&1", carry=[".out/dm"], timeout_s=400)
# $1: the folder holding ctxd, ctx and lib/ (the shared libraries the GPU image lacks).
set -u
TOP=${OUT:-/tmp/out}
OUT="$TOP/daemon" # many small files: packed into $TOP/daemon.tar.gz at the end
mkdir -p "$OUT"
C=${1:-dm}
B="$PWD/$C"
export LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_MODEL="$PWD/models/ctx-small"
export NCCL_NVLS_ENABLE=0
missing=$(ldd "$B/ctxd" "$B/ctx" | grep "not found")
[ -n "$missing" ] && { echo "missing libraries: $missing"; exit 1; }
command -v git >/dev/null || { echo "no git on this machine"; exit 1; }
BUDGET=${BUDGET:-8192}
el() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
# the repository: this project's common/ and daemon/ folders as a fresh git repository
R=/tmp/ctxd-repo
rm -rf "$R" && mkdir -p "$R" && cp -r common daemon "$R/"
git -C "$R" init -q && git -C "$R" add -A &&
    git -C "$R" -c user.email=ci@example.com -c user.name=ci commit -qm import || exit 1
Q1="Where is ctxd_engine_load defined?"
Q2="Which function parses the --gpus option of ctxd?"
Q3="Where is ctx_err_prefix defined?"
for be in local cuda; do
    S=/tmp/ctxd-$be.sock
    KV=/tmp/ctxd-kv-$be
    rm -rf "$KV"
    extra=""
    [ "$be" = cuda ] && extra="--max-ctx 32768"
    start() { "$B/ctxd" --daemon --socket "$S" --cache "$KV" --budget "$BUDGET" --checkpoint-every 1024 --log "$OUT/ctxd-$be.log" --backend "$be" $extra; }
    start || { echo "ctxd --backend $be did not start"; tail -5 "$OUT/ctxd-$be.log"; continue; }
    t0=$(date +%s.%N)
    "$B/ctx" --socket "$S" --json init "$R" >"$OUT/init-$be.json" 2>"$OUT/init-$be.err"
    t1=$(date +%s.%N)
    echo "== $be: init $(el "$t0" "$t1") s: $(tail -c 400 "$OUT/init-$be.json")"
    "$B/ctx" --socket "$S" --json status >"$OUT/status-$be.json" 2>&1
    i=0
    for q in "$Q1" "$Q2" "$Q3"; do
        i=$((i + 1))
        a0=$(date +%s.%N)
        "$B/ctx" --socket "$S" --json ask --repo "$R" --max-steps 4 --max-tokens 256 "$q" >"$OUT/ask$i-$be.json" 2>"$OUT/ask$i-$be.err"
        rc=$?
        echo "ask $i exit $rc in $(el "$a0" "$(date +%s.%N)") s" | tee "$OUT/ask$i-$be.time"
    done
    "$B/ctx" --socket "$S" stop >/dev/null 2>&1
    sleep 1
    t0=$(date +%s.%N)
    start && "$B/ctx" --socket "$S" --json init "$R" >"$OUT/reinit-$be.json" 2>&1
    echo "restart + init $(el "$t0" "$(date +%s.%N)") s"
    a0=$(date +%s.%N)
    "$B/ctx" --socket "$S" --json ask --repo "$R" --max-steps 4 --max-tokens 256 "$Q1" >"$OUT/ask4-$be.json" 2>"$OUT/ask4-$be.err"
    rc=$?
    echo "ask 4 (after the restart) exit $rc in $(el "$a0" "$(date +%s.%N)") s" | tee "$OUT/ask4-$be.time"
    "$B/ctx" --socket "$S" stop >/dev/null 2>&1
done
python3 tools/gpu/daemon_summary.py "$OUT" | tee "$TOP/daemon-summary.txt"
tar -C "$TOP" -czf "$TOP/daemon.tar.gz" daemon && rm -rf "$OUT"
