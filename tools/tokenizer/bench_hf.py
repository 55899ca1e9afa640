#!/usr/bin/env python3
"""The peer of bench/tokenizer: Hugging Face `tokenizers` encoding the same documents with the same
tokenizer.json on one thread. Writes {name, median_s, mb, ids, digest} for bench_tokenizer --peer.

usage: bench_hf.py tokenizer.json corpus.bin OUT.json [REPS]
"""
import json
import os
import statistics
import struct
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def main():
    tok_path, corpus_path, out_path = sys.argv[1:4]
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    data = open(corpus_path, "rb").read()
    docs, off = [], 0
    while off + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, off)
        docs.append(data[off + 4:off + 4 + n].decode("utf-8"))
        off += 4 + n
    mb = sum(len(d.encode()) for d in docs) / 1e6
    tok = Tokenizer.from_file(tok_path)
    times = []
    ids_total = 0
    digest = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        times.append(time.perf_counter() - t0)
        h = 0xcbf29ce484222325
        n = 0
        for ids in out:
            for v in ids:
                for k in range(4):
                    h ^= (v >> (8 * k)) & 0xFF
                    h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
            n += len(ids)
        ids_total, digest = n, h
    res = {"name": "HF tokenizers %s, 1 thread" % tokenizers.__version__, "median_s": statistics.median(times),
           "mb": mb, "ids": ids_total, "digest": "%016x" % digest, "times": times}
    with open(out_path, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
