#!/usr/bin/env python3
"""Build the tokenizer benchmark corpus: text files gathered from the given folders (source code
of many languages, docs), valid UTF-8 only, in a fixed order, up to a byte budget. Output is a
sequence of records <uint32 little-endian length><bytes>, one record per file, read the same way
by bench/tokenizer and tools/tokenizer/bench_hf.py so both tokenize exactly the same documents.

usage: bench_corpus.py OUT.bin MAX_MB DIR [DIR...]
"""
import os
import struct
import sys

EXT = {".c", ".h", ".cc", ".cpp", ".hpp", ".py", ".rs", ".go", ".js", ".ts", ".java", ".rb", ".lua",
       ".sh", ".md", ".txt", ".rst", ".json", ".yaml", ".yml", ".toml", ".html", ".css", ".cu",
       ".cuh", ".pyi", ".pl", ".pm", ".tcl", ".el", ".scm", ".hs", ".ml", ".sql", ".xml", ".build"}


def main():
    out, max_bytes, dirs = sys.argv[1], int(float(sys.argv[2]) * 1e6), sys.argv[3:]
    total = n = 0
    # Interleave the folders so that every source contributes even when the budget is small.
    lists = []
    for d in dirs:
        files = []
        for root, subdirs, names in os.walk(d):
            subdirs.sort()
            subdirs[:] = [s for s in subdirs if not s.startswith(".") and s not in ("node_modules", "build")]
            for name in sorted(names):
                if os.path.splitext(name)[1] in EXT or name == "meson.build":
                    files.append(os.path.join(root, name))
        lists.append(files)
    order = []
    for i in range(max(len(x) for x in lists) if lists else 0):
        for x in lists:
            if i < len(x):
                order.append(x[i])
    with open(out, "wb") as f:
        for p in order:
            if total >= max_bytes:
                break
            try:
                with open(p, "rb") as g:
                    data = g.read(4 << 20)
                data.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if not data or b"\0" in data:
                continue
            f.write(struct.pack("<I", len(data)))
            f.write(data)
            total += len(data)
            n += 1
    print("corpus: %d files, %.1f MB" % (n, total / 1e6))


if __name__ == "__main__":
    main()
