#!/usr/bin/env python3
"""The CI examples of editors/ci/ and the root .pre-commit-hooks.yaml: the YAML parses into the
shape GitHub Actions / pre-commit expect, and every `ctx ...` command line in them is accepted by
ctx's own argument parser (run against a socket where no daemon can be had, so each command gets
past parsing and fails only at connecting: exit 1 or 3, never the usage exit 2); every `ctxd ...`
line is parsed by ctxd with --version appended (options are read in order, so an unknown option
fails before --version answers). Prints TAP.
usage: test_ci_examples.py PATH_TO_CTX PATH_TO_CTXD"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ctx = os.path.abspath(sys.argv[1])
ctxd = os.path.abspath(sys.argv[2])
src = os.environ.get("CTX_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
try:
    import yaml
except ImportError:
    print("1..0 # SKIP python3 yaml (python3-yaml) is not installed")
    sys.exit(0)

n = 0
failed = False


def check(name, cond, detail=""):
    global n, failed
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, name))
    if not cond:
        failed = True
        for line in str(detail).splitlines():
            print("# " + line)


workflows = ["editors/ci/github-review.yml", "editors/ci/reviewdog.yml"]
docs = {}
for w in workflows:
    with open(os.path.join(src, w)) as f:
        docs[w] = yaml.safe_load(f)

commands = []
for w, d in docs.items():
    # YAML 1.1 reads the key `on` as true.
    on = d.get("on", d.get(True)) if isinstance(d, dict) else None
    jobs = d.get("jobs") if isinstance(d, dict) else None
    steps = [s for j in (jobs or {}).values() for s in j.get("steps", [])]
    check("%s parses as a workflow (name, on.pull_request, jobs with steps)" % w,
          bool(d.get("name")) and isinstance(on, dict) and "pull_request" in on and steps and
          all(isinstance(j.get("runs-on"), str) for j in jobs.values()), d)
    check("%s: every step has exactly one of uses/run" % w,
          all(("uses" in s) != ("run" in s) for s in steps), steps)
    for s in steps:
        run = s.get("run")
        if not run:
            continue
        run = run.replace("\\\n", " ")
        for line in run.splitlines():
            line = line.strip()
            if re.match(r"^ctxd?\s", line):
                commands.append((w, line))

with open(os.path.join(src, ".pre-commit-hooks.yaml")) as f:
    hooks = yaml.safe_load(f)
h = hooks[0] if isinstance(hooks, list) and hooks else {}
check(".pre-commit-hooks.yaml: one hook, id ctx, entry `ctx hook run`, language system, no filenames",
      len(hooks) == 1 and h.get("id") == "ctx" and h.get("entry") == "ctx hook run" and
      h.get("language") == "system" and h.get("pass_filenames") is False and h.get("name"), hooks)

want = ["review --range", "--format sarif", "--format github", "--format rdjsonl", "suggest --from-log"]
joined = "\n".join(c for _, c in commands)
want += ["ctxd --daemon --backend openai", "--api-key-env DEEPSEEK_API_KEY"]
check("the workflows run ctx review (sarif, github, rdjsonl) and ctx suggest --from-log",
      all(x in joined for x in want), joined)

tmp = tempfile.mkdtemp(prefix="ctx-ci-examples-")
try:
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    env = dict(os.environ)
    env.update({
        "HOME": tmp, "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.path.dirname(ctx) + os.pathsep + os.path.dirname(ctxd) + os.pathsep + env.get("PATH", ""),
        "CTXD_SOCKET": os.path.join(tmp, "nowhere", "ctxd.sock"),  # no daemon there...
        "CTXD_BIN": "/bin/false",                                  # ...and none can start
        "BASE_SHA": "0" * 40, "HEAD_SHA": "1" * 40, "PR_NUMBER": "1",
        "GITHUB_REPOSITORY": "o/r",
    })
    subprocess.run(["git", "init", "-q", "."], cwd=repo, env=env, check=True)
    with open(os.path.join(repo, "test.log"), "w") as f:
        f.write("FAIL: test_add: expected 3, got -1\n")

    def run_ctx(line):
        # GitHub expressions become plain words; only the ctx part of a pipeline runs.
        line = re.sub(r"\$\{\{[^}]*\}\}", "x", line)
        line = re.split(r"\s(?:\|\||&&|\|)\s", line)[0]
        return subprocess.run(["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=30)

    for w, line in commands:
        if line.startswith("ctxd"):
            p = run_ctx(re.sub(r"\$\{\{[^}]*\}\}", "x", line) + " --version")
            check("%s: `%s` is accepted by ctxd's option parser" % (w, line),
                  p.returncode == 0 and p.stdout.startswith("ctxd "), p.stderr)
            continue
        p = run_ctx(line)
        err = p.stderr.lower()
        check("%s: `%s` is accepted by ctx's argument parser (exit %d at connecting)" % (w, line, p.returncode),
              p.returncode in (1, 3) and "usage" not in err and "unexpected" not in err and "unknown" not in err,
              p.stderr)
    # The check tells a bad command line apart.
    p = run_ctx("ctx review --range A..B --format sarif --bogus")
    check("a command line ctx rejects exits 2 (the check above can fail)", p.returncode == 2, p.stderr)
    # The pre-commit framework's entry: arguments parsed, skipped by SKIP=ctx.
    p = subprocess.run(["bash", "-c", h.get("entry", "false")], cwd=repo, env=dict(env, SKIP="ctx"),
                       capture_output=True, text=True, timeout=30)
    check("the pre-commit entry runs (SKIP=ctx: exit 0, says skipped)",
          p.returncode == 0 and "review skipped (SKIP=ctx)" in p.stderr, p.stderr)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print("1..%d" % n)
sys.exit(1 if failed else 0)
