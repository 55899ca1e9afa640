#!/bin/sh
# A device call of 2026-11-30's twenty-first session (issue 10): the HCA prefill attention in the seesaw
# schedule (k_attn_hsw). test_attn (every case; HCA cases: k_attn_hsw within the bound, k_attn_hwg's C16
# form byte-equal to the gather), test_engine's wg part (mid64 against the CPU, chunked = one chunk),
# compute-sanitizer memcheck and synccheck on k_attn_hsw launches (test_attn's quick cases), then flash4's
# 4096-token chunks at 4K, 128K and 500K (bench-gpu-engine --suffix 8192) with CTX_CUDA_ATTN_HSW=0 and 1,
# alternating ROUNDS times (HSW_AB: the variants, each V or V:NAME=VALUE for one more variable).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s23a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
C=${1:-s6}
export LD_LIBRARY_PATH="$PWD/$C:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [ -z "$NO_TESTS" ]; then
    t=$(date +%s)
    timeout 240 "$C/test_attn" >"$OUT/test_attn.txt" 2>&1
    echo "test_attn: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_attn.txt") ok, $(grep -c '^not ok' "$OUT/test_attn.txt") not ok"
    grep -E "^not ok" "$OUT/test_attn.txt" | head -8
    grep -E "k_attn_hsw" "$OUT/test_attn.txt" | cut -c1-230 | head -8
    t=$(date +%s)
    CTX_ENGINE_PARTS=${PARTS:-wg} timeout 240 "$C/test_engine" >"$OUT/test_engine.txt" 2>&1
    echo "test_engine ${PARTS:-wg}: exit $? in $(($(date +%s) - t)) s: $(grep -c '^ok' "$OUT/test_engine.txt") ok, $(grep -c '^not ok' "$OUT/test_engine.txt") not ok"
    grep -E "^not ok" "$OUT/test_engine.txt" | head -5
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    for tool in ${SAN_TOOLS:-memcheck synccheck}; do
        t=$(date +%s)
        CTX_ATTN_QUICK=1 timeout 150 "$CS" --tool $tool --kernel-name kns=k_attn_hsw --launch-count 6 "$C/test_attn" \
            >"$OUT/san_$tool.txt" 2>&1
        echo "compute-sanitizer $tool (k_attn_hsw): exit $? in $(($(date +%s) - t)) s"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Internal|^not ok" "$OUT/san_$tool.txt" | head -4
    done
fi
for r in $(seq ${ROUNDS:-1}); do
    for v in ${HSW_AB:-0 1}; do
        x=; case $v in *:*) x=${v#*:} ;; esac
        f="$OUT/prefill-hsw$(echo $v | tr -c 'A-Za-z0-9\n' _)-r$r.txt"
        t=$(date +%s)
        env ${ENVS:-} CTX_CUDA_ATTN_HSW=${v%%:*} $x timeout 220 "$C/bench-gpu-engine" --suffix 8192 \
            --ctx ${CTXS:-4096,131072,500000} >"$f" 2>&1
        echo "flash4 prefill, CTX_CUDA_ATTN_HSW=$v (round $r): exit $? in $(($(date +%s) - t)) s"
        grep -E "^\| (4096|131072|500000) \| 4096 \|" "$f" | cut -d'|' -f2,3,4,5,9,10 | head -3
        grep -E "^\| (4096|131072|500000) \| [0-9.]+ \| [0-9]+ \|" "$f" | head -3
        grep -E "^\| (4096|500000) \| [0-9.]+ \| [0-9.]+% \|" "$f" | head -2
    done
done
