#!/usr/bin/env python3
"""The two-GPU prefill wall from each shard measured alone on one GPU (2026-12-01, thirtieth session).

bench-gpu-engine --full on one GPU, once per shard of the two-GPU split (--layers 22 for layers 0-21, --first-layer
22 --layers 21 for 22-42), gives each shard's wall of one chunk at three positions (the stage table's "wall ms").
cuda_multi_prefill pipelines the chunks over the shards (shard 1 on chunk k while shard 0 is on k + 1), so a call's
wall is max over k of (shard 0's chunks up to k) + (shard 1's chunks from k on): the sum of the slower shard's
chunks plus about one chunk. Chunk times are interpolated linearly in position between the three measured ones.
Checked against results/2026-12-01-s29 call9 (two H200s, measured 32.6 s): the same formula over that call's own
per-shard chunk times gives 32.63 s (--check).

    python3 tools/gpu/pipe_model.py SHARD0.txt SHARD1.txt [--tokens N] [--slice N ...]

--slice N: also the wall when the prefill is cut into calls of N tokens (ctxd's slices: 4 chunks a GPU), each
call's pipeline filled and drained on its own."""
import re
import sys


def parse(path):
    chunk, rows = None, []
    for line in open(path):
        m = re.search(r"chunks of (\d+)\)", line)
        if m and chunk is None:
            chunk = int(m.group(1))
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 15 and cells[0].isdigit() and re.fullmatch(r"[0-9.]+", cells[-1] or "x"):
            rows.append((int(cells[0]), float(cells[-1])))
    if chunk is None or len(rows) < 2:
        sys.exit(f"pipe_model: {path}: no 'chunks of N' header or fewer than two stage rows")
    return chunk, rows


def interp(p, pts):
    for i in range(len(pts) - 1):
        if p <= pts[i + 1][0] or i == len(pts) - 2:
            (p0, v0), (p1, v1) = pts[i], pts[i + 1]
            return v0 + (p - p0) / (p1 - p0) * (v1 - v0)


def call_wall(p0, n, chunk, s0pts, s1pts):
    starts = list(range(p0, p0 + n, chunk))
    s0 = [interp(p, s0pts) * min(chunk, p0 + n - p) / chunk / 1e3 for p in starts]
    s1 = [interp(p, s1pts) * min(chunk, p0 + n - p) / chunk / 1e3 for p in starts]
    return max(sum(s0[: k + 1]) + sum(s1[k:]) for k in range(len(s0))), sum(s0), sum(s1)


def main(argv):
    if "--check" in argv:
        s0 = [(0, 365.6), (245760, 519.9), (491808, 676.1)]
        s1 = [(0, 356.8), (245760, 524.2), (491808, 694.2)]
        w, a, b = call_wall(0, 500000, 8192, s0, s1)
        print(f"s29 call9's shards (two H200s, measured 32.6 s): shard sums {a:.2f} / {b:.2f} s, model {w:.2f} s")
        return 0
    files = [a for a in argv if not a.startswith("--") and not a.isdigit()]
    if len(files) != 2:
        print(__doc__)
        return 2
    tokens = int(argv[argv.index("--tokens") + 1]) if "--tokens" in argv else 500000
    slices = [int(argv[i + 1]) for i, a in enumerate(argv) if a == "--slice"]
    (c0, r0), (c1, r1) = parse(files[0]), parse(files[1])
    if c0 != c1:
        sys.exit(f"pipe_model: the shards ran different chunks ({c0}, {c1})")
    w, a, b = call_wall(0, tokens, c0, r0, r1)
    print(f"chunks of {c0}, {tokens} tokens: shard 0 {a:.2f} s, shard 1 {b:.2f} s alone; two GPUs, one call: {w:.2f} s")
    for s in slices:
        t, p = 0.0, 0
        while p < tokens:
            n = min(s, tokens - p)
            t += call_wall(p, n, c0, r0, r1)[0]
            p += n
        print(f"  in calls of {s} tokens: {t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
