"""Check model.py (ref numerics) against the golden outputs of DeepSeek's reference on
tests/fixtures/v4-tiny-a (see its README: end-to-end acceptance rms(d)/sigma <= 0.8 every row, <= 0.3
median, top-1 >= 50%; whole block rms <= 0.03 every block, <= 0.01 median).

  python3 tools/train/fixture_check.py [FIXTURE_DIR] [--device cuda] [--json OUT]
Exit status 0 when every bound holds."""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt  # noqa: E402
import model as M  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap.add_argument("fixture", nargs="?", default=os.path.join(root, "tests", "fixtures", "v4-tiny-a"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    M.set_numerics("ref")
    model, _ = ckpt.load(args.fixture, args.device)
    model.eval()
    exp = ckpt.read_safetensors(os.path.join(args.fixture, "expected.safetensors"))
    g = lambda n: np.array(ckpt.decode(exp[n]))  # noqa: E731
    rows, top1, res = [], 0, {}
    with torch.no_grad():
        # whole-block check on case 2's prefill (64 positions)
        toks = torch.from_numpy(g("case2.tokens").astype(np.int64))[None].to(args.device)
        P = int(g("case2.prefill_len")[0])
        ids = toks[:, :P]
        X = M.bf(model.embed[ids].float())[:, :, None, :].expand(-1, -1, model.cfg.hc, -1)
        blk = []
        for i, layer in enumerate(model.layers):
            ref_in = torch.from_numpy(g(f"case2.block{i-1}.out"))[None].to(args.device) if i else X
            out = layer(ref_in, ids)
            ref = torch.from_numpy(g(f"case2.block{i}.out")).to(args.device)
            r = float((out[0] - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
            blk.append(r)
        res["block_rms"] = blk
        print("whole block rms (from the recorded input):", " ".join(f"{r:.4f}" for r in blk))
        for k in range(7):
            toks = g(f"case{k}.tokens").astype(np.int64)
            P = int(g(f"case{k}.prefill_len")[0])
            ref = g(f"case{k}.logits")
            ids = torch.from_numpy(toks)[None].to(args.device)
            logits = model(ids)[0].float().cpu().numpy()
            mine = logits[P - 1:P - 1 + ref.shape[0]]
            sig = ref.std(1)
            r = np.sqrt(((mine - ref) ** 2).mean(1)) / sig
            rows += list(r)
            top1 += int((mine.argmax(1) == ref.argmax(1)).sum())
            print(f"case {k}: P={P} rows={ref.shape[0]} rms/sigma median {np.median(r):.3f} max {r.max():.3f} "
                  f"top1 {(mine.argmax(1) == ref.argmax(1)).sum()}/{ref.shape[0]}")
    rows = np.array(rows)
    res.update(median=float(np.median(rows)), max=float(rows.max()), top1=top1, n=len(rows))
    ok = (res["median"] <= 0.3 and res["max"] <= 0.8 and top1 >= 0.5 * len(rows)
          and max(blk) <= 0.03 and float(np.median(blk)) <= 0.01)
    res["pass"] = bool(ok)
    print(f"end to end: rms/sigma median {res['median']:.3f} max {res['max']:.3f} top-1 {top1}/{len(rows)} "
          f"-> {'PASS' if ok else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
