#!/bin/sh
# The agent evaluation of issue 12: start a ctxd on the trained model, ask tools/data's held-out
# questions through `ctx ask` (the real agent loop, tools and engine), score the answers.
#   sh tools/train/eval_agent.sh BUILD_DIR MODEL_DIR EVAL_JSONL [OUT_JSON] [LIMIT_PER_REPO] [SKIP_PER_REPO]
# e.g. sh tools/train/eval_agent.sh build-h4b models/ctx-small build-data/eval.jsonl /tmp/eval.json 5
# CTXD_ARGS: extra ctxd flags (word-split), e.g. to compare with and without constrained decoding:
#   CTXD_ARGS="--some-flag" sh tools/train/eval_agent.sh ...
set -eu
B=$1
MODEL=$2
EVAL=$3
OUTJ=${4:-}
LIMIT=${5:-0}
SKIP=${6:-0}
T=$(mktemp -d /tmp/ctx-eval.XXXXXX)
"$B/daemon/ctxd" --socket "$T/ctxd.sock" --model "$MODEL" --no-cache --no-watch --state "$T/state" \
    --log "$T/ctxd.log" --preload ${CTXD_ARGS:-} &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$T"' EXIT INT TERM
i=0
while [ ! -S "$T/ctxd.sock" ]; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 $PID 2>/dev/null; then
        echo "eval_agent: ctxd did not start:" >&2
        tail -20 "$T/ctxd.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
python3 "$(dirname "$0")/eval_agent.py" "$B/cli/ctx" "$T/ctxd.sock" "$EVAL" --limit "$LIMIT" --skip "$SKIP" ${OUTJ:+--json "$OUTJ"}
