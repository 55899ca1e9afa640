#!/bin/sh
# The GPU machine's side of issue 10's restore and side-by-side rows, in one device call (logs under
# $OUT): the restore round trip (tiny fixture, and Flash's 43-layer schedule), the 500K-token
# restore benchmark (pinned and disk), then transformers' DeepseekV4 beside the CUDA engine on the
# tiny fixture and on a synthetic mid checkpoint written here in the official format. Runs the
# binary built on the workstation in build dir $1 (carried), with the shared libraries the GPU image
# lacks in $1/gpulibs (libcjson.so.1, libsqlite3.so.0, libxxhash.so.0):
#   meson setup build-h7b -Dcuda=enabled -Dbuildtype=debugoptimized && ninja -C build-h7b bench/gpu/bench-gpu-restore
#   run(command="sh tools/gpu/h7b.sh build-h7b", timeout_s=240,
#       carry=["build-h7b/bench/gpu/bench-gpu-restore", "build-h7b/gpulibs"])
# $2 picks the parts (default "roundtrip,restore,sbs"; "sbs" alone takes about 80 s). BUDGET (seconds,
# default 228) bounds the whole script; each stage has its own timeout.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B=${1:-build-h7b}
PARTS=${2:-roundtrip,restore,sbs}
has() { case ",$PARTS," in *",$1,"*) return 0 ;; esac; return 1; }
BIN="$B/bench/gpu/bench-gpu-restore"
T0=$(date +%s)
BUDGET=${BUDGET:-228}
left() { l=$((BUDGET - ($(date +%s) - T0))); [ "$l" -lt 15 ] && l=15; echo "$l"; }  # timeout 0 would be none
export LD_LIBRARY_PATH="$PWD/$B/gpulibs:$LD_LIBRARY_PATH" CTX_SOURCE_ROOT="$PWD" PYTHONUNBUFFERED=1
# nothing can be fetched there: keep transformers from trying
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for lib in libcublasLt.so.13 libcudart.so.13; do
    if ldd "$BIN" | grep "$lib" | grep -q "not found"; then
        d=$(dirname "$(find / -name "$lib*" -not -path '/proc/*' 2>/dev/null | head -1)")
        export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
    fi
done
DISK="$PWD/.out/h7b-disk"
mkdir -p "$DISK"
{
    nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv
    echo "cpus: $(nproc)"
    free -g
    df -hT "$DISK" /tmp
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    ldd "$BIN" | grep "not found"
} > "$OUT/device.txt" 2>&1

if has roundtrip; then
    timeout 25 "$BIN" roundtrip --model tests/fixtures/v4-tiny-a --ctx 1029 --dir "$DISK/rt1" > "$OUT/roundtrip.txt" 2>&1
    echo "exit $?" >> "$OUT/roundtrip.txt"
    timeout 40 "$BIN" roundtrip --model flash43s --ctx 1029 --dir "$DISK/rt2" >> "$OUT/roundtrip.txt" 2>&1
    echo "exit $?" >> "$OUT/roundtrip.txt"
    echo "roundtrip done at $(($(date +%s) - T0)) s"
fi

if has restore; then
    timeout 100 "$BIN" bench --ctx 500000 --reps 10 --disk-reps 2 --dir "$DISK/kv" > "$OUT/restore.txt" 2>&1
    echo "exit $?" >> "$OUT/restore.txt"
    rm -rf "$DISK"
    echo "restore bench done at $(($(date +%s) - T0)) s"
fi

if has sbs; then
    MID=/tmp/h7b-mid
    timeout 45 "$BIN" write-ckpt --config mid --seed 1 --out "$MID" > "$OUT/side_by_side.txt" 2>&1
    echo "write-ckpt exit $? at $(($(date +%s) - T0)) s" >> "$OUT/side_by_side.txt"
    timeout "$(left)" python3 bench/gpu/side_by_side.py --engine "$BIN" --out "$OUT" \
        --model tiny=tests/fixtures/v4-tiny-a --model "mid=$MID" >> "$OUT/side_by_side.txt" 2>&1
    echo "exit $? at $(($(date +%s) - T0)) s" >> "$OUT/side_by_side.txt"
    rm -rf "$MID"
fi
rm -rf "$DISK"
cat "$OUT/roundtrip.txt" "$OUT/restore.txt" 2>/dev/null
tail -c 6000 "$OUT/side_by_side.txt" 2>/dev/null
