#!/bin/sh
# A device call of 2026-11-30's twenty-third session (issue 10), on a build with
# bench/gpu/results/2026-11-30-s25/v10-v11-cluster.patch applied (not kept: V9 stayed faster). There
# CTX_CUDA_MOE9_CLUSTER=CL takes V9's place: 2 / 4 V10 (clusters of 2 / 4 CTAs, one-row TMA boxes
# multicast), 11 / 12 / 14 V11 (rows gathered in the tiles' order, one box a CTA a stage; clusters of
# 1 / 2 / 4), 31 V11 without clusters reading the weights as if repacked (wrong results: timing only).
# test_moe_gemm under each CL of TEST_CLS (default CLS; V9's cases then check the form against V7's
# bytes), compute-sanitizer (SAN_TOOLS) on the first's launches, test_engine's moe part under it, then
# bench-gpu moe at MOE_S for V9 and each CL of CLS, ROUNDS times alternating, then flash4's chunks
# (bench-gpu-engine --suffix 8192 at CTXS) under each (NO_PREFILL=1 skips them).
#   run(command="tar -xJf .out/s6/carry.tar.xz && sh tools/gpu/s25a.sh s6 2>&1", carry=[".out/s6"], timeout_s=560)
. tools/gpu/lib.sh
gpu_setup "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
CLS=${CLS:-12 14 11}
if [ -z "$NO_TESTS" ]; then
    for cl in ${TEST_CLS:-$CLS}; do
        gpu_test test_moe_gemm 200 CTX_CUDA_MOE9_CLUSTER=$cl
        mv "$OUT/test_moe_gemm.txt" "$OUT/test_moe_gemm-cl$cl.txt"
    done
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    cl1=$(echo $CLS | cut -d' ' -f1)
    for tool in ${SAN_TOOLS:-memcheck synccheck}; do
        t=$(date +%s)
        CTX_CUDA_MOE9_CLUSTER=$cl1 CTX_CUDA_MOE_GEMM=9 timeout 150 "$CS" --tool $tool --kernel-name kns=moe_gemm10 \
            --launch-count 2 "$C/bench-gpu" moe 512 >"$OUT/san_$tool.txt" 2>&1
        echo "compute-sanitizer $tool (moe_gemm10<$cl1> launches): exit $? in $(($(date +%s) - t)) s"
        grep -E "ERROR SUMMARY|hazard|Internal" "$OUT/san_$tool.txt" | head -3
    done
    gpu_test test_engine 240 CTX_ENGINE_PARTS=moe CTX_CUDA_MOE9_CLUSTER=$cl1
fi
for r in $(seq ${ROUNDS:-2}); do
    for cl in 0 $CLS; do
        for S in ${MOE_S:-2048 4096 8192}; do
            ms=$(CTX_CUDA_MOE9_CLUSTER=$cl timeout 60 "$C/bench-gpu" moe $S 2>&1 | tee "$OUT/moe-$S-cl$cl-r$r.txt" |
                grep -E '^\| V9' | cut -d'|' -f5 | tr -d ' ')
            echo "round $r, cluster $cl, S = $S: V9 $ms ms"
        done
    done
done
[ -n "$NO_PREFILL" ] && exit 0
for cl in 0 $CLS; do
    f="$OUT/prefill-cl$cl.txt"
    t=$(date +%s)
    CTX_CUDA_MOE9_CLUSTER=$cl timeout 220 "$C/bench-gpu-engine" --suffix 8192 --ctx ${CTXS:-4096} >"$f" 2>&1
    echo "flash4 prefill, cluster $cl: exit $? in $(($(date +%s) - t)) s"
    grep -E "^\| (4096|131072|500000) \| 4096 \|" "$f" | cut -d'|' -f2,3,4,5,9,10 | head -3
    grep -A4 "moe experts" "$f" | cut -d'|' -f2,3,12 | head -5
done
