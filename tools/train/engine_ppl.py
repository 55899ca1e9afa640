"""The engine's perplexity on the trainer's held-out sequences, compared with the trainer's.

  python3 tools/train/engine_ppl.py CTX_BINARY MODEL_DIR REPORT_JSON [--threads N] [--json OUT]

REPORT_JSON is train.py's report: heldout_tokens (the sequences, BOS first) and heldout_nll_per_seq
(the trainer's mean NLL per sequence, exported checkpoint, reference numerics). For each sequence the
engine (`ctx model score`) prefills the first token and feeds the rest one at a time; logits row j
predicts token j+1. Runs here on the CPU (numpy only)."""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ctx")
    ap.add_argument("model")
    ap.add_argument("report")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()
    rep = json.load(open(a.report))
    with open(os.path.join(a.model, "config.json")) as f:
        V = json.load(f)["vocab_size"]
    seqs, trainer = rep["heldout_tokens"], rep["heldout_nll_per_seq"]
    tot_e = tot_t = 0.0
    n = 0
    per = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as td:
        for i, s in enumerate(seqs):
            inp, out = os.path.join(td, "in.json"), os.path.join(td, "logits.bin")
            with open(inp, "w") as f:
                json.dump({"tokens": s, "prefill": 1}, f)
            cmd = [a.ctx, "model", "score", a.model, "--input", inp, "--out", out]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            lg = np.fromfile(out, dtype="<f4").reshape(-1, V).astype(np.float64)[:len(s) - 1]
            m = lg.max(1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(lg - m).sum(1)))
            nll = lse - lg[np.arange(len(s) - 1), np.array(s[1:])]
            k = len(s) - 1
            per.append(dict(engine=float(nll.mean()), trainer=float(trainer[i]), tokens=k))
            tot_e += float(nll.sum())
            tot_t += trainer[i] * k
            n += k
            print(f"seq {i}: {k} tokens, mean NLL engine {nll.mean():.5f} trainer {trainer[i]:.5f}", flush=True)
    pe, pt = math.exp(tot_e / n), math.exp(tot_t / n)
    res = dict(tokens=n, ppl_engine=pe, ppl_trainer=pt, rel_diff=pe / pt - 1, seconds=time.time() - t0, per_seq=per)
    print(f"perplexity over {n} tokens: engine {pe:.4f}, trainer (exported, reference numerics) {pt:.4f}, "
          f"difference {100 * (pe / pt - 1):+.3f}%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if abs(pe / pt - 1) <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
