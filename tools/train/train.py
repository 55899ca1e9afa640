"""Train the small DeepSeek V4 model for ctxd on one GPU, export it in the official format, and measure
the held-out perplexity of the exported (quantised) checkpoint with the reference numerics.

  python3 tools/train/train.py --data build-data --tokenizer models/ctx-small/tokenizer.json \
      --out OUTDIR/ctx-small --minutes 7 --log OUTDIR/loss.csv --png OUTDIR/loss.png --report OUTDIR/report.json

Data (tools/data/README.md): train.bin/val.bin uint16 token ids, documents back to back each starting
with BOS; train.mask/val.mask one bit per token (LSB first), 1 = this token is a training target;
heldout_code.jsonl held-out code files. --smoke makes a small byte-token data set from this repository
instead (for a first check of the whole pipeline).

Optimisers: Muon (Nesterov momentum 0.95, 10 Newton-Schulz steps: 8 quintic (3.4445, -4.7750, 2.0315)
+ 2 (2, -1.5, 0.5), update scaled by 0.18*sqrt(max(out, in)), decoupled weight decay) for the attention,
compressor, indexer and expert matrices; AdamW for the embedding, head, norms, mHC parameters and
sinks. Schedule: linear warm-up, then constant, then linear decay over the last 25% of the time budget
(WSD, driven by wall-clock time so the run fits its budget). Routed experts are trained through FP4
fake quantisation (E2M1, per-32 E8M0 scales, straight-through), other matrices through FP8 tile fake
quantisation, so the exported weights are exactly what the last training step used."""
import argparse
import csv
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt  # noqa: E402
import model as M  # noqa: E402


# ----------------------------------------------------------------------------- Muon

def newton_schulz(G, steps=10):
    X = G.bfloat16()
    tr = X.shape[-2] > X.shape[-1]
    if tr:
        X = X.transpose(-2, -1)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for i in range(steps):
        a, b, c = (3.4445, -4.7750, 2.0315) if i < steps - 2 else (2.0, -1.5, 0.5)
        A = X @ X.transpose(-2, -1)
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tr:
        X = X.transpose(-2, -1)
    return X


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr=3e-3, momentum=0.95, weight_decay=0.1):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for grp in self.param_groups:
            by_shape = {}  # same-shape matrices go through one batched Newton-Schulz (fewer, larger kernels)
            for p in grp["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = torch.zeros_like(p)
                buf = st["buf"]
                buf.mul_(grp["momentum"]).add_(p.grad)
                by_shape.setdefault(tuple(p.shape), []).append((p, p.grad.add(buf, alpha=grp["momentum"])))
            for shape, items in by_shape.items():
                # the norm inside newton_schulz is per matrix (last two dims), so stacking changes nothing
                o = newton_schulz(torch.stack([u for _, u in items]))
                scale = 0.18 * math.sqrt(max(shape[-2], shape[-1]))
                for (p, _), op in zip(items, o.unbind(0)):
                    p.mul_(1 - grp["lr"] * grp["weight_decay"])
                    p.add_(op.to(p.dtype), alpha=-grp["lr"] * scale)


MUON_LEAVES = {"wq_a", "wq_b", "wkv", "wo_a", "wo_b", "wgate", "weights_proj", "w1", "w2", "w3", "s1", "s2", "s3"}


def param_groups(model):
    muon, decay, nodecay = [], [], []
    for name, p in model.named_parameters():
        leaf = name.split(".")[-1]
        if leaf in MUON_LEAVES:
            muon.append(p)
        elif leaf in ("embed", "head"):
            decay.append(p)
        else:
            nodecay.append(p)
    return muon, decay, nodecay


def amp(dev):
    return torch.autocast("cuda", dtype=torch.bfloat16) if str(dev).startswith("cuda") else M._null()


# ----------------------------------------------------------------------------- data

def _read(path):
    """Bytes of path, or of path.xz (the data travels to the GPU machine xz-compressed)."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    import lzma
    with lzma.open(path + ".xz") as f:
        return f.read()


def load_split(d, name):
    toks = np.frombuffer(_read(os.path.join(d, name + ".bin")), dtype="<u2").astype(np.int64)
    try:
        mb = np.frombuffer(_read(os.path.join(d, name + ".mask")), dtype=np.uint8)
        m = np.unpackbits(mb, bitorder="little")[:len(toks)].astype(np.float32)
    except FileNotFoundError:
        m = np.ones(len(toks), np.float32)
    return toks, m


def smoke_data(root, vocab, n_tokens=3_000_000):
    """Byte tokens (ids 3..258) of this repository's C sources, documents starting with BOS."""
    files = sorted(glob.glob(os.path.join(root, "**", "*.c"), recursive=True))
    files = [f for f in files if "/build" not in f and "subprojects" not in f]
    out = []
    total = 0
    for f in files:
        b = np.frombuffer(open(f, "rb").read(), dtype=np.uint8).astype(np.int64) + 3
        out.append(np.concatenate([[0], b[:8000]]))
        total += len(out[-1])
        if total > n_tokens:
            break
    toks = np.concatenate(out)
    cut = int(len(toks) * 0.95)
    return (toks[:cut], np.ones(cut, np.float32)), (toks[cut:], np.ones(len(toks) - cut, np.float32))


class Sampler:
    """Windows of T+1 tokens. A share `tfrac` starts at the BOS of a transcript (a document with
    masked-out tokens: agent transcripts, whose loss covers only what the model emits); of the rest,
    half start at a document's BOS (position 0 holds BOS, as in every prompt the engine sees) and
    half at a random position."""

    def __init__(self, toks, mask, T, seed, tfrac=0.0, idx=None):
        self.t, self.m, self.T = torch.from_numpy(toks), torch.from_numpy(mask), T
        bos = np.nonzero(toks == 0)[0]
        ok = bos[bos < len(toks) - T - 1]
        self.starts = ok if len(ok) else np.array([0])
        if idx is not None:  # tools/data's (start, length, kind) triples: kind 2 = transcript
            tr = idx[idx[:, 2] == 2, 0].astype(np.int64)
        else:  # documents with masked-out tokens (transcripts, FIM)
            ends = np.append(bos[1:], len(toks))
            zeros = np.concatenate([[0], np.cumsum(mask == 0)])
            nz = zeros[ends] - zeros[bos + 1] if len(bos) else np.array([])
            tr = bos[nz > 0] if len(bos) else bos
        tr = tr[tr < len(toks) - T - 1]
        self.tstarts = tr
        self.tlen = {}
        self.tok_tr = None  # per token: 1 inside a transcript (every_transcript weighting)
        self.code_docs = None  # (start, length) of code and FIM documents (code_windows)
        if idx is not None:
            self.tlen = {int(s): int(n) for s, n, k in idx if k == 2}
            t2 = idx[idx[:, 2] == 2].astype(np.int64)
            d = np.zeros(len(toks) + 1, np.int8)
            np.add.at(d, t2[:, 0], 1)
            np.add.at(d, np.minimum(t2[:, 0] + t2[:, 1], len(toks)), -1)
            self.tok_tr = torch.from_numpy(np.cumsum(d[:-1]).astype(np.bool_))
            cd = idx[idx[:, 2] != 2].astype(np.int64)
            cd = cd[cd[:, 0] < len(toks) - T - 1]
            if len(cd):
                self.code_docs = cd[:, :2]
        self.only_transcripts = False
        self.tweight = 1.0  # loss weight of a sampled transcript's own targets (its completions)
        # run 3: weight every transcript token of every window (a transcript window also holds the start
        # of the next document; a code window may hold a transcript), not only the sampled transcript's
        self.every_transcript = False
        # run 3: windows that do not start at a transcript start in code/FIM documents only (when
        # transcripts are most of the tokens, random windows would otherwise be transcript prompts,
        # whose tokens are masked out)
        self.code_windows = False
        # run 3: a transcript longer than the window (a repository laid out at 3072 tokens) gets the
        # window that ENDS at its end (question, tool results and every completion inside; the start of
        # the system prompt cut) instead of one from its BOS, which would hold none of its completions
        self.long_end = False
        self.tfrac = tfrac if len(tr) else 0.0
        self.rng = np.random.default_rng(seed)

    def batch(self, B):
        n = len(self.t) - self.T - 1
        r = self.rng.random(B)
        if self.code_windows and self.code_docs is not None:
            cd = self.code_docs
            pick = self.rng.integers(0, len(cd), B)
            ln = cd[:, 1]
            wpick = self.rng.choice(len(cd), B, p=ln / ln.sum())  # random positions: by document length
            off = (self.rng.random(B) * ln[wpick]).astype(np.int64)
            s = np.where(r < 0.5, cd[pick, 0], np.minimum(cd[wpick, 0] + off, n - 1))
        else:
            s = np.where(r < 0.5, self.rng.choice(self.starts, B), self.rng.integers(0, n, B))
        ist = np.zeros(B, bool)
        if self.only_transcripts:
            s = self.rng.choice(self.tstarts, B)
        elif self.tfrac > 0:
            ist = self.rng.random(B) < self.tfrac
            s = np.where(ist, self.rng.choice(self.tstarts, B), s)
        if self.long_end:
            for b in np.nonzero(ist)[0]:
                L = self.tlen.get(int(s[b]), 0)
                if L > self.T + 1:
                    s[b] += L - (self.T + 1)
        idx = torch.from_numpy(s)[:, None] + torch.arange(self.T + 1)[None]
        m = self.m[idx]
        if self.only_transcripts:  # the loss sees that transcript's completions only
            for b, st in enumerate(s):
                m[b, self.tlen.get(int(st), self.T + 1):] = 0
        elif self.tweight != 1.0 and self.every_transcript and self.tok_tr is not None:
            m = m * (1.0 + (self.tweight - 1.0) * self.tok_tr[idx].float())
        elif self.tweight != 1.0:
            # a transcript has ~185 targets (tool calls and the answer) against 4096 in a code window:
            # without this its completions are ~5% of the loss, too little to learn the copying
            for b in np.nonzero(ist)[0]:
                m[b, :self.tlen.get(int(s[b]), self.T + 1)] *= self.tweight
        return self.t[idx], m

    def transcript_windows(self, n, seed):
        """n fixed windows starting at transcripts' BOS, only that transcript's completions weighted."""
        rng = np.random.default_rng(seed)
        st = rng.choice(self.tstarts, min(n, len(self.tstarts)), replace=False)
        idx = torch.from_numpy(st)[:, None] + torch.arange(self.T + 1)[None]
        m = self.m[idx].clone()
        for b, s0 in enumerate(st):
            m[b, self.tlen.get(int(s0), self.T + 1):] = 0
        return self.t[idx], m


# ----------------------------------------------------------------------------- evaluation

def nll_of(model, seqs, device, bs=8):
    """Summed NLL and count over seqs (list of 1-D int arrays; position 0 is context only)."""
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), bs):
            chunk = seqs[i:i + bs]
            L = max(len(s) for s in chunk)
            x = torch.zeros(len(chunk), L, dtype=torch.long)
            w = torch.zeros(len(chunk), L)
            for j, s in enumerate(chunk):
                x[j, :len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
                w[j, 1:len(s)] = 1
            x, w = x.to(device), w.to(device)
            if M.NUMERICS == "train":
                with amp(device):
                    logits = model(x)
            else:
                logits = model(x)
            lp = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                 reduction="none").reshape(len(chunk), L - 1)
            tot += float((lp * w[:, 1:]).sum())
            cnt += int(w[:, 1:].sum())
    return tot, cnt


def heldout_sequences(args, val):
    """Held-out code for perplexity: tokens of heldout_code.jsonl (field 'tokens', or 'text' encoded with
    HF tokenizers), each prefixed with BOS, cut to --ppl-len; else windows of val.bin."""
    seqs = []
    hp = os.path.join(args.data or "", "heldout_code.jsonl")
    if args.data and (os.path.exists(hp) or os.path.exists(hp + ".xz")):
        tok = None
        lines = _read(hp).decode().splitlines()
        if True:
            for line in lines:
                if len(seqs) >= args.ppl_docs:
                    break
                o = json.loads(line)
                if isinstance(o.get("tokens"), list):
                    ids = list(o["tokens"])
                else:
                    if tok is None:
                        from tokenizers import Tokenizer
                        tok = Tokenizer.from_file(args.tokenizer)
                    ids = tok.encode(o["text"], add_special_tokens=False).ids
                if ids and ids[0] != 0:
                    ids = [0] + ids
                if len(ids) >= 64:
                    seqs.append(ids[:args.ppl_len])
    if not seqs:
        t = val[0]
        for i in range(args.ppl_docs):
            s = (i * 7919 * args.ppl_len) % max(1, len(t) - args.ppl_len)
            seqs.append([0] + list(t[s:s + args.ppl_len - 1]))
    return [list(map(int, s)) for s in seqs]


# ----------------------------------------------------------------------------- plot

def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # the device image has matplotlib; say so if not
        print("no matplotlib:", e)
        return
    tr = [r for r in rows if r["train_loss"] == r["train_loss"]]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["tokens"] / 1e6 for r in tr], [r["train_loss"] for r in tr], lw=0.8,
            label="train (weighted masked CE, mean of 10 steps)")
    v = [(r["tokens"] / 1e6, r["val_loss"]) for r in rows if r["val_loss"] == r["val_loss"]]
    if v:
        ax.plot([a for a, _ in v], [b for _, b in v], "o-", ms=3, label="val (mostly code)")
    v = [(r["tokens"] / 1e6, r["tval_loss"]) for r in rows if r.get("tval_loss", float("nan")) == r.get("tval_loss")]
    if v:
        ax.plot([a for a, _ in v], [b for _, b in v], "s-", ms=3, label="val transcripts (completions)")
    ax.set_xlabel("tokens (M)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("ctx-small (DeepSeek V4 architecture) training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--tokenizer", default="models/ctx-small/tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--aux", type=float, default=1.0)
    ap.add_argument("--config", help="JSON object of Config overrides")
    ap.add_argument("--log", required=True)
    ap.add_argument("--png")
    ap.add_argument("--report", required=True)
    ap.add_argument("--ppl-docs", type=int, default=8)
    ap.add_argument("--ppl-len", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transcript-frac", type=float, default=0.6)
    ap.add_argument("--init", help="start from this exported checkpoint (fine-tuning)")
    ap.add_argument("--only-transcripts", action="store_true",
                    help="every window starts at a transcript and only its completions are targets")
    ap.add_argument("--transcript-weight", type=float, default=1.0,
                    help="loss weight of a sampled transcript's completion tokens (code tokens weigh 1)")
    ap.add_argument("--every-transcript", action="store_true",
                    help="--transcript-weight applies to every transcript token in every window (run 3)")
    ap.add_argument("--code-windows", action="store_true",
                    help="windows not started at a transcript start in code/FIM documents only (run 3)")
    ap.add_argument("--long-end", action="store_true",
                    help="with --every-transcript: a transcript longer than the window gets the window ending at "
                    "its end (run 3)")
    ap.add_argument("--val-transcripts", type=int, default=32,
                    help="held-out transcripts (val.idx) whose completion loss is the second val metric")
    ap.add_argument("--val-windows", type=int, default=32, help="val windows (multiple of 8; 32 in every run)")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA ops of two steps (step 20)")
    ap.add_argument("--prev-log", help="loss CSV of the run this one continues: prepended to --log and the plot, "
                    "this run's steps and tokens counted on from its last row")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    t_start = time.time()
    dev = args.device
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

    cfg = M.Config()
    if args.config:
        for k, v in json.loads(args.config).items():
            setattr(cfg, k, v)
    if args.smoke:
        train, val = smoke_data(root, cfg.vocab_size)
    else:
        train, val = load_split(args.data, "train"), load_split(args.data, "val")
    assert int(train[0].max()) < cfg.vocab_size
    print(f"data: train {len(train[0]):,} tokens ({int(train[1].sum()):,} targets), val {len(val[0]):,}", flush=True)

    M.set_numerics("train")
    if args.init:  # continue from an exported checkpoint (its stored values; optimiser state starts fresh)
        model, _ = ckpt.load(args.init)
        cfg = model.cfg
    else:
        model = M.Transformer(cfg)
        M.init_weights(model, args.seed)
    model = model.to(dev)
    nparam = sum(p.numel() for p in model.parameters())
    n_exp = sum(l.ffn.w1.numel() * 3 for l in model.layers)
    active = nparam - n_exp + n_exp * cfg.topk // cfg.n_routed_experts - model.embed.numel()
    print(f"params {nparam/1e6:.2f}M (routed experts {n_exp/1e6:.2f}M; active per token without embedding "
          f"{active/1e6:.2f}M)", flush=True)
    muon_p, decay_p, nodecay_p = param_groups(model)
    opt_m = Muon(muon_p, lr=args.lr)
    opt_a = torch.optim.AdamW([{"params": decay_p, "weight_decay": 0.1}, {"params": nodecay_p, "weight_decay": 0.0}],
                              lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    base_lr = args.lr
    tidx = None
    if args.data:
        try:
            tidx = np.frombuffer(_read(os.path.join(args.data, "train.idx")), dtype="<u4").reshape(-1, 3)
        except FileNotFoundError:
            pass
    sampler = Sampler(*train, args.seq, args.seed, args.transcript_frac, tidx)
    sampler.only_transcripts = args.only_transcripts and tidx is not None
    sampler.tweight = args.transcript_weight
    sampler.every_transcript = args.every_transcript
    sampler.code_windows = args.code_windows
    sampler.long_end = args.long_end and args.every_transcript
    print(f"documents {len(sampler.starts):,}, transcripts {len(sampler.tstarts):,} "
          f"(sampled as {100 * sampler.tfrac:.0f}% of windows)", flush=True)
    vidx = None
    if args.data:
        try:
            vidx = np.frombuffer(_read(os.path.join(args.data, "val.idx")), dtype="<u4").reshape(-1, 3)
        except FileNotFoundError:
            pass
    vs = Sampler(*val, args.seq, args.seed + 1, idx=vidx)
    # 4 x 8 windows whatever --batch is: the same val windows as every earlier run (comparable losses)
    val_batches = [vs.batch(8) for _ in range(args.val_windows // 8)]
    tval_batches = []  # completions of held-out-repository transcripts: what the agent evaluation asks for
    if len(vs.tstarts) and args.val_transcripts > 0:
        tx, tm = vs.transcript_windows(args.val_transcripts, args.seed + 2)
        tval_batches = [(tx[i:i + 8], tm[i:i + 8]) for i in range(0, len(tx), 8)]

    def masked_loss(batches):
        tot = cnt = 0.0
        for xb, mb in batches:
            xb, mb = xb.to(dev), mb.to(dev)
            lg = model(xb[:, :-1])
            l = F.cross_entropy(lg.float().reshape(-1, lg.shape[-1]), xb[:, 1:].reshape(-1), reduction="none")
            tot += float((l * mb[:, 1:].reshape(-1)).sum())
            cnt += float(mb[:, 1:].sum())
        return tot / max(cnt, 1) if cnt else float("nan")

    def val_loss():
        """(mixed val loss, transcript-completion val loss)."""
        model.eval()
        with torch.no_grad(), amp(dev):
            v, vt = masked_loss(val_batches), masked_loss(tval_batches)
        model.train()
        return v, vt

    budget = args.minutes * 60
    rows, step, tokens, ema, lsum, lcnt = [], 0, 0, None, None, 0
    # the checkpoint kept is the one with the lowest val + transcript val (so the starting point when --init)
    v0, vt0 = val_loss()
    print(f"start: val {v0:.4f} transcript val {vt0:.4f}", flush=True)
    rows.append(dict(step=0, tokens=0, seconds=0.0, lr=0.0, train_loss=float("nan"), aux=float("nan"),
                     val_loss=v0, tval_loss=vt0))

    def score(v, vt):
        return v + (vt if vt == vt else 0.0)

    best = dict(score=score(v0, vt0), step=0, tokens=0, val=v0, tval=vt0,
                state={k: t.detach().clone() for k, t in model.state_dict().items()})
    B = args.batch
    t0 = time.time()
    model.train()
    next_val = budget / 12
    t_steady = None  # (time, tokens) after the first 5 steps: the steady-state rate excludes warm-up
    prof = None
    while True:
        el = time.time() - t0
        frac = el / budget
        if frac >= 1.0:
            break
        lrm = min(1.0, (step + 1) / args.warmup)
        if frac > 0.75:
            lrm *= max(0.1, 1.0 - (frac - 0.75) / 0.25 * 0.9)
        for o in (opt_m, opt_a):
            for g in o.param_groups:
                g["lr"] = base_lr * lrm
        if args.profile and dev.startswith("cuda") and step == 20:
            try:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                          torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
            except Exception as ex:
                print("profiler failed:", repr(ex), flush=True)
                prof = None
        xb, mb = sampler.batch(B)
        xb, mb = xb.to(dev, non_blocking=True), mb.to(dev, non_blocking=True)
        try:
            with amp(dev):
                logits = model(xb[:, :-1])
                ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1),
                                     reduction="none")
                w = mb[:, 1:].reshape(-1)
                loss = (ce * w).sum() / w.sum().clamp_min(1)
                aux = model.aux_losses()
                aux = torch.stack(aux).mean() if aux else torch.zeros((), device=dev)
            (loss + args.aux * aux).backward()
        except RuntimeError as ex:  # out of memory: drop this step, continue with 3/4 of the batch
            if "out of memory" not in str(ex) or B <= 1:
                raise
            logits = ce = w = loss = aux = None
            model.aux_losses()
            opt_m.zero_grad(set_to_none=True)
            opt_a.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            B = max(1, B * 3 // 4)
            print(f"out of memory at step {step}: batch now {B}", flush=True)
            continue
        del logits, ce
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt_m.step()
        opt_a.step()
        opt_m.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        with torch.no_grad():  # auxiliary-loss-free balancing (noaux_tc): nudge the selection bias
            for l in model.layers:
                f = l.ffn
                if not f.hash and f.load is not None:
                    f.bias += 1e-3 * torch.sign(f.load.float().mean() - f.load.float())
        step += 1
        tokens += xb.shape[0] * args.seq
        if step == 5:
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            t_steady = (time.time(), tokens)
        if prof is not None and step == 22:
            torch.cuda.synchronize()
            try:  # diagnostics only: never let the profiler stop the run
                prof.__exit__(None, None, None)
                ka = prof.key_averages()
                for key in ("self_device_time_total", "self_cuda_time_total"):
                    try:
                        print(ka.table(sort_by=key, row_limit=25, max_name_column_width=60), flush=True)
                        break
                    except Exception:
                        continue
            except Exception as ex:
                print("profiler failed:", repr(ex), flush=True)
            prof = None
        lsum = loss.detach() if lsum is None else lsum + loss.detach()
        lcnt += 1
        if step % 10 == 0 or step == 1:
            ema = float(lsum) / lcnt  # mean train loss over the steps since the last log line
            lsum, lcnt = None, 0
            vl = vt = float("nan")
            if el >= next_val:
                vl, vt = val_loss()
                next_val = el + budget / 12
                if score(vl, vt) < best["score"]:
                    best = dict(score=score(vl, vt), step=step, tokens=tokens, val=vl, tval=vt,
                                state={k: t.detach().clone() for k, t in model.state_dict().items()})
            rows.append(dict(step=step, tokens=tokens, seconds=round(time.time() - t0, 2), lr=base_lr * lrm,
                             train_loss=ema, aux=float(aux.detach()), val_loss=vl, tval_loss=vt))
            if step % 50 == 0 or step == 1 or vl == vl:
                rate = tokens / max(time.time() - t0, 1e-9)
                print(f"step {step} tok {tokens/1e6:.1f}M {time.time()-t0:.0f}s {rate/1e3:.1f}k tok/s B {B} "
                      f"lr {base_lr*lrm:.2e} loss {ema:.4f} aux {float(aux.detach()):.4f} val {vl:.4f} "
                      f"tval {vt:.4f}", flush=True)
    train_s = time.time() - t0
    if dev.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
    steady = None
    if t_steady is not None and step > 5:
        steady = (tokens - t_steady[1]) / max(t0 + train_s - t_steady[0], 1e-9)
    vfinal, tvfinal = val_loss()
    rows.append(dict(step=step, tokens=tokens, seconds=round(train_s, 2), lr=0.0, train_loss=ema, aux=float("nan"),
                     val_loss=vfinal, tval_loss=tvfinal))
    if score(vfinal, tvfinal) <= best["score"]:
        best = dict(score=score(vfinal, tvfinal), step=step, tokens=tokens, val=vfinal, tval=tvfinal, state=None)
    else:  # an earlier evaluation was better: export that one
        model.load_state_dict(best["state"])
    print(f"kept the checkpoint of step {best['step']}: val {best['val']:.4f} transcript val {best['tval']:.4f}"
          f"; steady {0 if steady is None else steady/1e3:.1f}k tokens/s", flush=True)
    for r in rows:
        r["run"] = 1
    if args.prev_log:
        try:
            with open(args.prev_log, newline="") as f:
                prev = [{k: float(v) if k not in ("step", "tokens", "run") else int(float(v)) for k, v in r.items()}
                        for r in csv.DictReader(f)]
            for r in prev:
                r.setdefault("tval_loss", float("nan"))
                r.setdefault("run", 1)
            for r in rows:  # this run's number follows the previous log's last
                r["run"] = max(p["run"] for p in prev) + 1
            for r in rows:
                r["step"] += prev[-1]["step"]
                r["tokens"] += prev[-1]["tokens"]
            rows = prev + rows
        except Exception as ex:  # a plotting nicety must not lose the run
            print("previous log unusable:", repr(ex), flush=True)
    with open(args.log, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[-1].keys()))
        wr.writeheader()
        wr.writerows(rows)
    if args.png:
        plot(rows, args.png)
    print(f"trained {step} steps, {tokens/1e6:.1f}M tokens in {train_s/60:.2f} min; final val loss {vfinal:.4f} "
          f"transcript val {tvfinal:.4f}", flush=True)

    # held-out perplexity: train numerics (bf16, fake quant) and the exported checkpoint (ref numerics)
    nbytes = ckpt.export(model, args.out)  # tokenizer.json is already in models/ctx-small (H4a's)
    print(f"exported {nbytes:,} bytes to {args.out}", flush=True)
    try:
        seqs = heldout_sequences(args, val)
    except Exception as ex:  # never lose the trained model to an evaluation problem
        print("held-out code unavailable, using val windows:", repr(ex), flush=True)
        args.data = None
        seqs = heldout_sequences(args, val)
    model.eval()
    a, n = nll_of(model, seqs, dev)
    ppl_train = math.exp(a / n)
    del model, opt_m, opt_a
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()
    M.set_numerics("ref")
    torch.backends.cuda.matmul.allow_tf32 = False
    ref, _ = ckpt.load(args.out, dev)
    ref.eval()
    per_seq = []
    tot = cnt = 0
    for s in seqs:
        a1, n1 = nll_of(ref, [s], dev)
        per_seq.append(a1 / n1)
        tot += a1
        cnt += n1
    ppl_ref = math.exp(tot / cnt)
    print(f"held-out code: {len(seqs)} sequences, {cnt} predicted tokens; perplexity train-numerics {ppl_train:.4f}, "
          f"exported checkpoint (reference numerics) {ppl_ref:.4f}", flush=True)
    files = sorted(os.listdir(args.out))
    rep = dict(config=cfg.to_hf(), params=nparam, routed_expert_params=n_exp, active_params_no_embed=active,
               steps=step, tokens=tokens, train_minutes=train_s / 60, total_minutes=(time.time() - t_start) / 60,
               final_train_loss_ema=ema, final_val_loss=vfinal, ppl_train_numerics=ppl_train, ppl_exported_ref=ppl_ref,
               heldout_nll_per_seq=per_seq, heldout_tokens=seqs, checkpoint_bytes=nbytes,
               files={f: os.path.getsize(os.path.join(args.out, f)) for f in files},
               data_train_tokens=int(len(train[0])), data_train_targets=int(train[1].sum()),
               seq=args.seq, batch=args.batch, batch_final=B, lr=args.lr, smoke=args.smoke, init=args.init,
               only_transcripts=sampler.only_transcripts, transcript_frac=sampler.tfrac,
               transcript_weight=sampler.tweight, every_transcript=sampler.every_transcript,
               code_windows=sampler.code_windows, long_end=sampler.long_end, start_val_loss=v0, start_tval_loss=vt0, final_tval_loss=tvfinal,
               kept_step=best["step"], kept_tokens=best["tokens"], kept_val_loss=best["val"],
               kept_tval_loss=best["tval"], tokens_per_s=tokens / train_s, tokens_per_s_steady=steady)
    with open(args.report, "w") as f:
        json.dump(rep, f)


if __name__ == "__main__":
    main()
