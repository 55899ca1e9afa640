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
# gpu_full8 TAG BIN [VAR=VALUE ...]: bench-gpu-engine BIN --full --layers 8 (V4-Flash's first 8 layers, one
# GPU unless CTX_GPUS says otherwise) under the variables into $OUT/full8-TAG.txt; prints its decode, 65536-token
# prefill and per-stage rows.
gpu_full8()
{
    _g=$1 _b=$2
    shift 2
    _t=$(date +%s)
    env "$@" timeout 200 "$_b" --full --layers 8 --ctx 4096 --steps 8 --suffix 4096 --prefill 65536 \
        >"$OUT/full8-$_g.txt" 2>&1
    echo "full --layers 8, $_g${*:+ ($*)}: exit $? in $(($(date +%s) - _t)) s"
    grep -E "^\| (4096 \| 1 \||65536 \|)" "$OUT/full8-$_g.txt"
    grep -E "^\| (0|[0-9]+) \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" "$OUT/full8-$_g.txt" | tail -3
}
# gpu_ncu_chunk P: Nsight Compute's time and DRAM bytes of every launch of one flash4 chunk of 4096 tokens
# after a random state of P (CTX_BENCH_PROFILE_AT), summarised by ncu_chunk.py into $OUT/chunk_P.txt.
gpu_ncu_chunk()
{
    _ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    _t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$1 timeout 200 "$_ncu" --profile-from-start off --cache-control none --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size \
        --csv --page raw "$C/bench-gpu-engine" --suffix 4096 --ctx $1 >"$OUT/ncu_chunk_$1.csv" 2>"$OUT/ncu_chunk_$1.err"
    echo "ncu chunk at $1: exit $? in $(($(date +%s) - _t)) s"
    python3 tools/gpu/ncu_chunk.py "$OUT/ncu_chunk_$1.csv" >"$OUT/chunk_$1.txt" 2>&1
    head -40 "$OUT/chunk_$1.txt"
    xz -6 "$OUT/ncu_chunk_$1.csv"
}
# gpu_ncu_full TAG REGEX SKIP P: Nsight Compute's full set on one launch of the kernels matching REGEX (a
# template kernel's name without its arguments), after SKIP of them, in a flash4 chunk at P: the details
# page into $OUT/details_TAG.txt, the SASS stall samples summarised by ncu_sass.py into $OUT/sass_TAG.txt.
gpu_ncu_full()
{
    _ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    _t=$(date +%s)
    CTX_BENCH_PROFILE_AT=$4 timeout 200 "$_ncu" --profile-from-start off --set full --import-source no \
        -k "regex:$2" --launch-skip $3 -c 1 -o "$OUT/$1" "$C/bench-gpu-engine" --suffix 4096 --ctx $4 >"$OUT/ncu_$1.log" 2>&1
    echo "== ncu $1 ($2, skip $3, at $4): exit $? in $(($(date +%s) - _t)) s"
    "$_ncu" -i "$OUT/$1.ncu-rep" --page details --print-details all >"$OUT/details_$1.txt" 2>&1
    "$_ncu" -i "$OUT/$1.ncu-rep" --page source --csv --print-source sass >"$OUT/sass_$1.csv" 2>&1
    python3 tools/gpu/ncu_sass.py "$OUT/sass_$1.csv" >"$OUT/sass_$1.txt" 2>&1
    sed -n 2,12p "$OUT/sass_$1.txt"
    grep -E "^    (Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued Instruction|DRAM Throughput|Memory Throughput|L2 Hit Rate|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Block Limit [A-Z]) " \
        "$OUT/details_$1.txt" | head -16
    rm -f "$OUT/$1.ncu-rep" "$OUT/ncu_$1.log" "$OUT/sass_$1.csv"
}
# gpu_ncu_hc: unless NO_NCU, gpu_ncu_chunk 4096 and the summary's total and mHC kernels' lines (the
# twenty-ninth session's calls).
gpu_ncu_hc()
{
    if [ -z "$NO_NCU" ]; then
        gpu_ncu_chunk 4096 >/dev/null
        grep -E "kernel time|k_hc_" "$OUT/chunk_4096.txt"
    fi
}
# gpu_spec_daemon DM: tests/daemon/test_spec_daemon against ctxd --backend cuda from the daemon carry in folder DM
# (tools/gpu/mkcarry-daemon.sh; the bundled tokenizer extracted at the tree's root) into $OUT/spec_daemon.txt.
gpu_spec_daemon()
{
    _b="$PWD/$1"
    _t=$(date +%s)
    env LD_LIBRARY_PATH="$_b/lib:${LD_LIBRARY_PATH:-}" CTX_SOURCE_ROOT="$PWD" CTX_BUILD_ROOT="$PWD" CMOCKA_MESSAGE_OUTPUT=TAP \
        CTX_TEST_CTXD_FLAGS="--backend cuda" timeout 150 "$_b/t/test_spec_daemon" "$_b/ctxd" >"$OUT/spec_daemon.txt" 2>&1
    echo "test_spec_daemon (--backend cuda): exit $? in $(($(date +%s) - _t)) s: $(grep -c '^ok' "$OUT/spec_daemon.txt") ok, $(grep -c '^not ok' "$OUT/spec_daemon.txt") not ok"
    grep -E "^not ok|^# .*(error|Failure)" "$OUT/spec_daemon.txt" | cut -c1-200 | head -8
}
# gpu_shard I TAG [ARGS...]: shard I (0: layers 0-21, 1: 22-42) of V4-Flash's two-GPU split alone on this GPU,
# bench-gpu-engine --full through the 500K prefill, the 8K suffix and decode at 500K (ARGS: more options, e.g.
# --chunk N) into $OUT/TAG.txt (tools/gpu/pipe_model.py reads two of them); prints its rows.
gpu_shard()
{
    _i=$1 _g=$2
    shift 2
    if [ "$_i" = 0 ]; then _l="--layers 22"; else _l="--first-layer 22 --layers 21"; fi
    _t=$(date +%s)
    timeout ${FULL_TIMEOUT:-150} "$C/bench-gpu-engine" --full $_l --ctx 500000 --steps 4 --suffix 8192 "$@" \
        >"$OUT/$_g.txt" 2>&1
    echo "shard $_i ($_l $*): exit $? in $(($(date +%s) - _t)) s"
    grep -E "^V4-Flash|^\| (500000) \| 1 \||^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]% \||^\| (0|245760|483616|491808) \|" \
        "$OUT/$_g.txt" | cut -c1-400
}
