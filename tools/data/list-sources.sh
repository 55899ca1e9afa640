#!/bin/sh
# Print "GROUP<TAB>PATH" for every source file of the training corpus on this machine. A group is
# one package or repository: the train/held-out split is made per group (never per file), so no
# held-out package leaks into training through a sibling file. Usage: list-sources.sh [ROOT]
# (ROOT = the ctxd checkout, for its npm dirs). Files over 256 KiB are left out (generated tables).
set -eu
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
code='\.(c|h|cc|cpp|hpp|py|js|mjs|cjs|ts|sh|pl|pm|lua|el|rb|tcl|go|rs|java|scm|awk|sql|m4|cmake)$'
emit() { # $1 = group prefix, $2 = base dir, $3 = depth of the group component below base
    [ -d "$2" ] || return 0
    find "$2" -type f -size -256k 2>/dev/null | grep -E "$code" | grep -v '/test/data/\|\.min\.js$' |
        awk -v p="$1" -v b="$2/" -v d="$3" '{ r = substr($0, length(b) + 1); n = split(r, a, "/");
            g = (n > d) ? a[d] : a[1]; sub(/\.[a-z]+$/, "", g); print p g "\t" $0 }'
}
for py in /usr/lib/python3.[0-9]*; do emit "py:" "$py" 1; done
emit "py3:" /usr/lib/python3/dist-packages 1
emit "inc:" /usr/include 1
for d in /usr/share/*/; do
    d=${d%/}; n=${d##*/}
    case $n in doc|man|locale|i18n|icons|fonts|info|mime|zoneinfo|X11) continue ;; esac
    find "$d" -type f -size -256k 2>/dev/null | grep -E "$code" | awk -v g="share:$n" '{print g "\t" $0}'
done
seen=""
while read -r dir; do
    case $dir in \#*|'') continue ;; esac
    nm="$root/$dir/node_modules"
    [ -d "$nm" ] || continue
    emit "npm:" "$nm" 1
done < "$root/scripts/npm-dirs"
for r in /tmp/bench-repos/redis /tmp/bench-repos/git /tmp/bench-repos/postgresql-15 /tmp/bench-repos/sqlite3; do
    [ -d "$r" ] && find "$r" -type f -size -256k -not -path '*/.git/*' 2>/dev/null | grep -E "$code" |
        awk -v g="repo:${r##*/}" '{print g "\t" $0}'
done
find "$root/subprojects" -type f -size -256k 2>/dev/null | grep -E "$code" | awk '{print "sub:" "subprojects" "\t" $0}'
: "$seen"
