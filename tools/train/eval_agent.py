"""Agent evaluation (issue 12 acceptance): "where is X defined" on held-out repositories, answered by the
model through the real agent loop of a running ctxd (real tool calls, real engine).

  python3 tools/train/eval_agent.py CTX SOCKET EVAL_JSONL [--limit N] [--skip N] [--max-steps N] [--json OUT]

For each question of tools/data's eval.jsonl ({repo, dir, question, symbol, file, line, budget}; dir is
relative to the file's folder): `ctx init DIR --budget B` once per repository, then
`ctx --json ask --repo DIR --max-steps N "QUESTION"`. An answer is correct when the run used at least
one tool call, stopped with a final answer, and the answer names the expected file (its path relative to
the repository, or its base name when that is unique in the repository) and the expected line number.
Parse rate: completions whose DSML tool-call block parsed (steps with tool calls) over those plus the
malformed ones the loop reported."""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def objects(text):
    """Every top-level JSON value in text (the CLI prints one per event plus the result)."""
    dec, i, out = json.JSONDecoder(), 0, []
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i >= len(text):
            break
        try:
            o, j = dec.raw_decode(text, i)
        except ValueError:
            nl = text.find("\n", i)
            if nl < 0:
                break
            i = nl + 1
            continue
        out.append(o)
        i = j
    return out


def names_file(answer, rel, root):
    if rel in answer:
        return True
    base = os.path.basename(rel)
    if not re.search(r"(?<![\w.-])" + re.escape(base) + r"(?![\w-])", answer):
        return False
    hits = 0
    for _, _, files in os.walk(root):
        hits += files.count(base)
    return hits == 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ctx")
    ap.add_argument("socket")
    ap.add_argument("eval")
    ap.add_argument("--limit", type=int, default=0, help="questions per repository (0: all)")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N questions of each repository")
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    base = os.path.dirname(os.path.abspath(a.eval))
    qs = [json.loads(l) for l in open(a.eval) if l.strip()]
    if a.limit or a.skip:
        per, keep = {}, []
        for q in qs:
            per[q["dir"]] = per.get(q["dir"], 0) + 1
            if per[q["dir"]] > a.skip and (not a.limit or per[q["dir"]] <= a.skip + a.limit):
                keep.append(q)
        qs = keep
    ctx = [a.ctx, "--socket", a.socket]
    inited, rows = set(), []
    n_ok = n_tool = blocks = malformed = 0
    t0 = time.time()
    for k, q in enumerate(qs):
        root = os.path.join(base, q["dir"])
        if root not in inited:
            r = subprocess.run(ctx + ["init", root, "--budget", str(q.get("budget", 1536))],
                               capture_output=True, text=True, timeout=a.timeout)
            if r.returncode:
                print(f"init {root} failed: {r.stderr.strip()}", file=sys.stderr)
            inited.add(root)
        t1 = time.time()
        try:
            r = subprocess.run(ctx + ["--json", "ask", "--repo", root, "--max-steps", str(a.max_steps), q["question"]],
                               capture_output=True, text=True, timeout=a.timeout)
            out = objects(r.stdout)
            err = r.stderr.strip()[-300:]
        except subprocess.TimeoutExpired:
            out, err = [], "timeout"
        res = next((o for o in reversed(out) if isinstance(o, dict) and "answer" in o and "stop" in o), None)
        steps_with_calls = set()
        for o in out:
            p = o.get("params", {}) if isinstance(o, dict) else {}
            if o.get("event") == "agent.event" and p.get("kind") == "tool_call":
                steps_with_calls.add(p.get("step"))
        answer = res.get("answer", "") if res else ""
        calls = res.get("tool_calls", []) if res else []
        mal = int(res.get("malformed", 0)) if res else 0
        blocks += len(steps_with_calls)
        malformed += mal
        used_tool = any(not c.get("is_error") for c in calls)
        line_ok = re.search(r"(?<!\d)" + str(q["line"]) + r"(?!\d)", answer) is not None
        file_ok = names_file(answer, q["file"], root)
        ok = bool(res) and res.get("stop") == "final" and used_tool and file_ok and line_ok
        n_ok += ok
        n_tool += used_tool
        rows.append(dict(repo=q["repo"], question=q["question"], file=q["file"], line=q["line"], ok=ok,
                         file_ok=file_ok, line_ok=line_ok, used_tool=used_tool,
                         tools=[c.get("tool") for c in calls], calls=calls, stop=res.get("stop") if res else None,
                         reasoning=(res.get("reasoning") or "")[:400] if res else "",
                         malformed=mal, answer=answer[:400], seconds=round(time.time() - t1, 1),
                         error=None if res else err))
        print(f"[{k + 1}/{len(qs)}] {'OK ' if ok else 'no '} {q['repo']} {q['symbol']} -> {q['file']}:{q['line']} | "
              f"tools {[(c.get('tool'), c.get('arguments')) for c in calls]} stop {res.get('stop') if res else err!r} | "
              f"{answer[:120]!r}", flush=True)
    n = len(rows)
    summ = dict(questions=n, correct=n_ok, accuracy=n_ok / max(n, 1), used_tools=n_tool, tool_call_blocks=blocks,
                malformed=malformed, parse_rate=blocks / max(blocks + malformed, 1), seconds=round(time.time() - t0, 1))
    print(json.dumps(summ))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(summary=summ, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
