#!/bin/sh
# One device call for issues 10 and 11 (one H200): the pending engine (build-h7a/pending, built on the
# workstation as tools/gpu/README.md says and carried as stripped binaries in the flat folder $1:
# test_engine, bench-gpu-engine, libcjson.so.1), then H7b's transformers side-by-side (build dir $2,
# its bench/gpu/bench-gpu-restore and gpulibs/ carried). Parts, in this order so that the longest
# and least certain part (pro4: ~41 GB of synthetic weights generated on the host, then uploaded)
# runs last and a timeout there loses nothing else:
#   (i)   test_engine (PARTS, default topk,fixture,tiny,mid,long) + compute-sanitizer memcheck over
#         its "memcheck" part                                    -> test_engine.txt, sanitizer.txt
#   (ii)  bench-gpu-engine flash4 at 4K / 128K / 500K --profile, then mid at 4K / 16K
#                                                                -> bench_flash4.txt (mid appended)
#   (iv)  sh tools/gpu/h7b.sh $2 sbs with OUT=$OUT/h7b           -> h7b/{device,side_by_side}.txt, .json
#   (iii) bench-gpu-engine pro4 at 128K / 500K --profile (V4-Pro's first four layers at full shape
#         and the 61-layer / 8-GPU extrapolations)                -> bench_pro4.txt
# summary.txt (also on stdout): the device, each part's exit status and seconds, the key rows. At most
# 8 files come back from $OUT, and these are 8. BUDGET (seconds, default 410) bounds the whole; each
# part has its own timeout (TEST_TIMEOUT 110, SAN_TIMEOUT 45, FLASH_TIMEOUT 70, MID_TIMEOUT 30,
# SBS_BUDGET 100; pro4 gets what is left). Without a GPU or a carried binary it stops at once
# (exit 77 / 2).
#   run(command="sh tools/gpu/combined.sh build-h11/carry build-h7b 2>&1", timeout_s=480,
#       carry=["build-h11/carry", "build-h7b/bench/gpu/bench-gpu-restore", "build-h7b/gpulibs"])
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-build-h11/carry}
H=${2:-build-h7b}
T0=$(date +%s)
BUDGET=${BUDGET:-410}
el() { echo $(($(date +%s) - T0)); }
S="$OUT/summary.txt"
: >"$S"
say() { echo "$*" | tee -a "$S"; }
for f in "$C/test_engine" "$C/bench-gpu-engine" "$C/libcjson.so.1" "$H/bench/gpu/bench-gpu-restore" tools/gpu/h7b.sh; do
    if [ ! -e "$f" ]; then
        say "combined: $f is missing (carry it; see this script's header)"
        exit 2
    fi
done
if ! nvidia-smi -L >/dev/null 2>&1; then
    say "combined: no GPU here (nvidia-smi -L failed); nothing run"
    exit 77
fi
# nothing here uses NVLink multicast; keep it off for any library that might (KINDS.md)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$C/test_engine" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
{
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv,noheader
    echo "cpus: $(nproc)"
    free -g | head -2
    ldd "$C/test_engine" "$C/bench-gpu-engine" | grep "not found"
} 2>&1 | tee -a "$S"

# (i) the pending engine's test, then memcheck over its short part
t=$(date +%s)
CTX_ENGINE_PARTS=${PARTS:-topk,fixture,tiny,mid,long} timeout ${TEST_TIMEOUT:-110} "$C/test_engine" \
    >"$OUT/test_engine.txt" 2>&1
say "(i) test_engine exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok," \
    "$(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
grep -E "^not ok|top-k|long context|graph|mismatch" "$OUT/test_engine.txt" | cut -c1-220 | tee -a "$S"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
    t=$(date +%s)
    CTX_ENGINE_PARTS=memcheck timeout ${SAN_TIMEOUT:-45} "$CS" --tool memcheck --error-exitcode 9 \
        "$C/test_engine" >"$OUT/sanitizer.txt" 2>&1
    say "(i) memcheck exit $? in $(($(date +%s) - t)) s"
    grep -E "^ok|^not ok|ERROR SUMMARY|Invalid" "$OUT/sanitizer.txt" | head -8 | cut -c1-200 | tee -a "$S"
else
    say "(i) memcheck: no compute-sanitizer found"
fi

# (ii) flash4 at 4K / 128K / 500K, then mid (appended to the same file)
t=$(date +%s)
timeout ${FLASH_TIMEOUT:-70} "$C/bench-gpu-engine" --models flash4 --ctx 4096,131072,500000 --steps 48 --profile \
    >"$OUT/bench_flash4.txt" 2>&1
say "(ii) bench flash4 exit $? in $(($(date +%s) - t)) s"
t=$(date +%s)
echo "
==== bench-gpu-engine --models mid --ctx 4096,16384 --steps 48 --profile" >>"$OUT/bench_flash4.txt"
timeout ${MID_TIMEOUT:-30} "$C/bench-gpu-engine" --models mid --ctx 4096,16384 --steps 48 --profile \
    >>"$OUT/bench_flash4.txt" 2>&1
say "(ii) bench mid exit $? in $(($(date +%s) - t)) s"
grep -v "^#" "$OUT/bench_flash4.txt" | grep -E "^\| (flash4|mid) |^\|  *[0-9]+ \||floor, band" | cut -c1-240 | tee -a "$S"

# (iv) H7b's transformers side-by-side (its own script, its own budget, its files under $OUT/h7b)
t=$(date +%s)
OUT="$OUT/h7b" BUDGET=${SBS_BUDGET:-100} sh tools/gpu/h7b.sh "$H" sbs >/dev/null 2>&1
say "(iv) h7b.sh sbs exit $? in $(($(date +%s) - t)) s"
grep -E "^\| (tiny|mid) |^exit|Error" "$OUT/h7b/side_by_side.txt" 2>/dev/null | tail -16 | cut -c1-220 | tee -a "$S"

# (iii) pro4: what is left of the budget
left=$((BUDGET - $(el)))
if [ "$left" -lt 20 ]; then
    say "(iii) bench pro4 not run: $left s left of $BUDGET"
else
    t=$(date +%s)
    timeout "$left" "$C/bench-gpu-engine" --models pro4 --ctx 131072,500000 --steps 48 --profile \
        >"$OUT/bench_pro4.txt" 2>&1
    say "(iii) bench pro4 exit $? in $(($(date +%s) - t)) s (limit $left s)"
    grep -E "^# |^\| pro4 |^\| \((a|b|c)\)|floor, band|^by layer" "$OUT/bench_pro4.txt" | cut -c1-240 | tee -a "$S"
fi
say "combined: done in $(el) s"
