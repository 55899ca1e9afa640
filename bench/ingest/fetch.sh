#!/bin/sh
# Fetch Debian source packages as benchmark repositories for bench-ingest: enables deb-src (a
# sources file under /etc/apt/sources.list.d/), runs `apt-get source`, and makes each unpacked tree
# a git repository with one commit (plus a few synthetic commits so that churn has history), and
# git-builtin (git's builtin/ folder, about 500K tokens: the default budget) as its own repository.
# usage: bench/ingest/fetch.sh DEST [PACKAGE...]   (default: redis sqlite3 git postgresql-15)
# Needs root (apt) and dpkg-dev (dpkg-source). Re-running skips packages already fetched.
set -eu
DEST=${1:?usage: fetch.sh DEST [PACKAGE...]}
shift
[ $# -gt 0 ] || set -- redis sqlite3 git postgresql-15
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

SRC=/etc/apt/sources.list.d/ctx-bench-deb-src.sources
if [ ! -f "$SRC" ]; then
    # The same archive as the binary packages, source indexes only.
    cat > "$SRC" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    apt-get update -qq
fi
command -v dpkg-source > /dev/null || apt-get install -y -qq dpkg-dev > /dev/null

export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench
export GIT_COMMITTER_EMAIL=bench@localhost GIT_CONFIG_NOSYSTEM=1
# Make the tree at $1 a git repository with one commit, then a short history: a few files touched
# in later commits, so that the stable -> volatile order and the churn walk have something to do.
make_git() {
    cd "$1"
    git init -q .
    git add -A -f . > /dev/null
    GIT_AUTHOR_DATE='1700000000 +0000' GIT_COMMITTER_DATE='1700000000 +0000' git commit -q -m "as unpacked"
    i=1
    for f in $(git ls-files | grep -E '\.(c|h|py|js|go|rs|sh)$' | awk 'NR % 97 == 0' | head -20); do
        printf '\n' >> "$f"
        git add "$f"
        GIT_AUTHOR_DATE="$((1700000000 + i * 3600)) +0000" GIT_COMMITTER_DATE="$((1700000000 + i * 3600)) +0000" \
            git commit -q -m "touch $f"
        i=$((i + 1))
    done
    echo "$(basename "$1"): $(git ls-files | wc -l) files, $(du -sh --apparent-size --exclude=.git . | cut -f1)"
    cd - > /dev/null
}

for p in "$@"; do
    if [ -d "$DEST/$p/.git" ]; then
        echo "$p: already there"
        continue
    fi
    work=$(mktemp -d "$DEST/.fetch-$p-XXXXXX")
    (cd "$work" && apt-get source -qq "$p" > /dev/null 2>&1) || {
        echo "$p: apt-get source failed" >&2
        rm -rf "$work"
        continue
    }
    tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
    mv "$tree" "$DEST/$p"
    rm -rf "$work"
    make_git "$DEST/$p"
done

# A repository of about 500K tokens (the layout's default budget): git's builtin/ folder.
if [ -d "$DEST/git/builtin" ] && [ ! -d "$DEST/git-builtin/.git" ]; then
    mkdir -p "$DEST/git-builtin"
    cp -a "$DEST/git/builtin/." "$DEST/git-builtin/"
    make_git "$DEST/git-builtin"
fi
