#!/usr/bin/env python3
"""Summarise tools/gpu/daemon.sh's outputs: per backend the prefill, the restart's restore and each
question's answer and wall time, and whether the two backends' answers agree.
usage: daemon_summary.py OUTDIR"""
import json
import os
import sys

d = sys.argv[1]


def last_json(path):
    try:
        lines = [l for l in open(path, errors="replace").read().splitlines() if l.startswith("{")]
        for l in reversed(lines):
            o = json.loads(l)
            if "event" not in o:
                return o
    except (OSError, ValueError):
        pass
    return {}


def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return ""


rows = {}
for be in ("local", "cuda"):
    st = last_json(f"{d}/status-{be}.json").get("model", {})
    ini = last_json(f"{d}/init-{be}.json")
    re = last_json(f"{d}/reinit-{be}.json")
    print(f"## --backend {be}: {st.get('backend', '?')} {st.get('device', '')}")
    print(f"prefill: {ini.get('computed_tokens', '?')} tokens at {ini.get('prefill_tokens_per_s', 0):.0f} tok/s; "
          f"after restart: {re.get('restored_tokens', '?')} restored from the KV cache, {re.get('computed_tokens', '?')} recomputed")
    ans = []
    for i in range(1, 5):
        a = last_json(f"{d}/ask{i}-{be}.json")
        t = read(f"{d}/ask{i}-{be}.time")
        tools = ", ".join(f"{c.get('tool')}({json.dumps(c.get('arguments'))})" for c in a.get("tool_calls", []))
        u = a.get("usage", {})
        print(f"ask {i} [{t}] stop={a.get('stop')} steps={a.get('steps')} completion tokens={u.get('completion_tokens')} "
              f"tools: {tools}\n    answer: {a.get('answer', '')!r}")
        ans.append(a.get("answer"))
    rows[be] = ans
if rows.get("local") and rows.get("cuda"):
    same = sum(1 for a, b in zip(rows["local"], rows["cuda"]) if a is not None and a == b)
    print(f"answers identical on the two backends: {same} of {len(rows['local'])}")
