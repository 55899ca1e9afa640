# Shared by the device-call scripts since 2026-11-30's twenty-second session (sourced: . tools/gpu/lib.sh).
# gpu_setup C: $OUT made (default /tmp/out), $C the carry folder (default s6), the carry's libraries first
# on LD_LIBRARY_PATH, CTX_SOURCE_ROOT the tree. gpu_test NAME SECONDS [VAR=VALUE ...]: runs $C/NAME under
# the variables into $OUT/NAME.txt, prints its exit status, time and TAP counts, and its first failures.
gpu_setup()
{
    OUT=${OUT:-/tmp/out}
    mkdir -p "$OUT"
    C=${1:-s6}
    export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
}
gpu_test()
{
    _n=$1 _s=$2
    shift 2
    _t=$(date +%s)
    env "$@" timeout "$_s" "$C/$_n" >"$OUT/$_n.txt" 2>&1
    echo "$_n${*:+ ($*)}: exit $? in $(($(date +%s) - _t)) s: $(grep -c '^ok' "$OUT/$_n.txt") ok, $(grep -c '^not ok' "$OUT/$_n.txt") not ok"
    grep -E "^not ok" "$OUT/$_n.txt" | cut -c1-250 | head -5
}
