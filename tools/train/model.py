"""DeepSeek V4 architecture at small size, in PyTorch (spec: shared/spec/deepseek-v4.md §4-§5).

One implementation, two numerics (module global NUMERICS):

* "ref": what DeepSeek's reference inference computes, for a full prefill from position 0. Activations
  are fp32 tensors holding bf16 values where the reference stores bf16; every FP8/FP4-weight product
  quantises its input to E4M3 per token in 1x128 blocks; window/compressed KV get the E4M3 QDQ of the
  nope dims; indexer q/k get Hadamard + E2M1 QDQ; scores in bf16; ties in the indexer top-k go to the
  lowest index. Used for the golden-fixture check and for the perplexity of the exported checkpoint.
* "train": the same graph, differentiable, under bf16 autocast, with fake quantisation (straight-through)
  of the weights into the formats the export writes (routed experts E2M1 with per-32 E8M0 scales,
  other matrices E4M3 with 128x128 E8M0 tiles) and of the KV/indexer QDQ simulations. Activation
  quantisation is not simulated in training.

The indexer's top-k is a non-differentiable selection in both modes; in training the indexer learns
from an auxiliary KL loss towards the main attention's distribution over the compressed entries
(DeepSeek V3.2's recipe; its inputs are detached so that loss trains only the indexer).

Rounding helpers do the E4M3/E2M1 rounding arithmetically (round-half-even on the format's grid), so
the same code runs on torch 1.13 (no float8 dtypes) and torch 2.x.
"""
import json
import math
from dataclasses import dataclass, field, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

NUMERICS = "train"  # or "ref"


def set_numerics(mode):
    global NUMERICS
    assert mode in ("train", "ref")
    NUMERICS = mode


def is_ref():
    return NUMERICS == "ref"


# ----------------------------------------------------------------------------- config

@dataclass
class Config:
    vocab_size: int = 8192
    dim: int = 384
    n_layers: int = 6
    n_mtp: int = 0
    n_hash_layers: int = 2
    n_heads: int = 6
    head_dim: int = 128
    rope_dim: int = 64
    q_lora_rank: int = 256
    o_groups: int = 2
    o_lora_rank: int = 256
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    topk: int = 2
    moe_inter: int = 256
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    window: int = 128
    index_n_heads: int = 4
    index_head_dim: int = 128
    index_topk: int = 64
    hc: int = 4
    sinkhorn_iters: int = 20
    eps: float = 1e-6
    hc_eps: float = 1e-6
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: int = 32
    beta_slow: int = 1
    compress_ratios: list = field(default_factory=lambda: [0, 0, 4, 128, 4, 128])
    bos: int = 0
    eos: int = 1

    @staticmethod
    def from_hf(d):
        rs = d["rope_scaling"]
        c = Config(
            vocab_size=d["vocab_size"], dim=d["hidden_size"], n_layers=d["num_hidden_layers"],
            n_mtp=d.get("num_nextn_predict_layers", 0), n_hash_layers=d.get("num_hash_layers", 0),
            n_heads=d["num_attention_heads"], head_dim=d["head_dim"], rope_dim=d["qk_rope_head_dim"],
            q_lora_rank=d["q_lora_rank"], o_groups=d["o_groups"], o_lora_rank=d["o_lora_rank"],
            n_routed_experts=d["n_routed_experts"], n_shared_experts=d["n_shared_experts"],
            topk=d["num_experts_per_tok"], moe_inter=d["moe_intermediate_size"],
            route_scale=d["routed_scaling_factor"], swiglu_limit=d["swiglu_limit"], window=d["sliding_window"],
            index_n_heads=d["index_n_heads"], index_head_dim=d["index_head_dim"], index_topk=d["index_topk"],
            hc=d["hc_mult"], sinkhorn_iters=d["hc_sinkhorn_iters"], eps=d["rms_norm_eps"], hc_eps=d["hc_eps"],
            rope_theta=d["rope_theta"], compress_rope_theta=d["compress_rope_theta"], rope_factor=rs["factor"],
            original_seq_len=rs["original_max_position_embeddings"], beta_fast=rs["beta_fast"],
            beta_slow=rs["beta_slow"], compress_ratios=list(d["compress_ratios"]),
            bos=d.get("bos_token_id", 0), eos=d.get("eos_token_id", 1))
        assert d.get("scoring_func", "sqrtsoftplus") == "sqrtsoftplus"
        assert d.get("expert_dtype", "fp4") == "fp4"
        return c

    def to_hf(self):
        """The root HF config.json the engine's parser (inference/config.c) accepts."""
        return {
            "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
            "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": self.bos, "eos_token_id": self.eos, "expert_dtype": "fp4",
            "hc_eps": self.hc_eps, "hc_mult": self.hc, "hc_sinkhorn_iters": self.sinkhorn_iters,
            "head_dim": self.head_dim, "hidden_act": "silu", "hidden_size": self.dim,
            "index_head_dim": self.index_head_dim, "index_n_heads": self.index_n_heads,
            "index_topk": self.index_topk, "initializer_range": 0.02, "max_position_embeddings": 1048576,
            "moe_intermediate_size": self.moe_inter, "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts, "norm_topk_prob": True,
            "num_attention_heads": self.n_heads, "num_experts_per_tok": self.topk,
            "num_hidden_layers": self.n_layers, "num_hash_layers": self.n_hash_layers,
            "num_key_value_heads": 1, "num_nextn_predict_layers": self.n_mtp, "o_groups": self.o_groups,
            "o_lora_rank": self.o_lora_rank, "q_lora_rank": self.q_lora_rank, "qk_rope_head_dim": self.rope_dim,
            "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
            "rms_norm_eps": self.eps,
            "rope_scaling": {"beta_fast": self.beta_fast, "beta_slow": self.beta_slow, "factor": self.rope_factor,
                             "original_max_position_embeddings": self.original_seq_len, "type": "yarn"},
            "rope_theta": self.rope_theta, "routed_scaling_factor": self.route_scale,
            "scoring_func": "sqrtsoftplus", "sliding_window": self.window, "swiglu_limit": self.swiglu_limit,
            "tie_word_embeddings": False, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
            "transformers_version": "4.57.1", "use_cache": True, "vocab_size": self.vocab_size,
            "compress_rope_theta": self.compress_rope_theta, "compress_ratios": list(self.compress_ratios),
        }


# ----------------------------------------------------------------------------- number formats

def bf(x):
    """Round an fp32 tensor to bf16 values (ref numerics only)."""
    if NUMERICS == "ref":
        return x.to(torch.bfloat16).float()
    return x


def pow2_ceil(s):
    """2^ceil(log2(s)) exactly, for s > 0 (E8M0 scale)."""
    m, e = torch.frexp(s)
    e = torch.where(m == 0.5, e - 1, e)
    return torch.ldexp(torch.ones_like(s), e)


def round_e4m3(x):
    """Round-half-even onto the E4M3 ('fn') grid; x must already be within +-448."""
    _, E = torch.frexp(x)
    e = torch.clamp(E - 1, min=-6)
    step = torch.ldexp(torch.ones_like(x), e - 3)
    return torch.clamp(torch.round(x / step) * step, -448.0, 448.0)


def round_e2m1(x):
    """Round-half-even onto the E2M1 grid (0, .5, 1, 1.5, 2, 3, 4, 6); x within +-6."""
    _, E = torch.frexp(x)
    e = torch.clamp(E - 1, min=0)
    step = torch.ldexp(torch.ones_like(x), e - 1)
    return torch.clamp(torch.round(x / step) * step, -6.0, 6.0)


def qdq_fp8_blocks(x, block):
    """Per-block (last dim) E4M3 quantise-dequantise with power-of-two scales (act_quant)."""
    shp = x.shape
    xb = x.float().reshape(*shp[:-1], shp[-1] // block, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    s = pow2_ceil(amax * (1.0 / 448.0))
    q = round_e4m3(torch.clamp(xb / s, -448.0, 448.0)) * s
    return q.reshape(shp)


def qdq_fp4_blocks(x, block=32):
    shp = x.shape
    xb = x.float().reshape(*shp[:-1], shp[-1] // block, block)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(6 * 2.0 ** -126)
    s = pow2_ceil(amax * (1.0 / 6.0))
    q = round_e2m1(torch.clamp(xb / s, -6.0, 6.0)) * s
    return q.reshape(shp)


def ste(x, q):
    """Straight-through: forward q, gradient of identity."""
    return x + (q - x).detach()


def quant_fp8_weight(w):
    """[out, in] -> (values e4m3 as float [out,in], scale [ceil(out/128), ceil(in/128)]) with the
    smallest power-of-two tile scale that keeps |w/scale| <= 448."""
    o, i = w.shape
    po, pi = -o % 128, -i % 128
    wp = F.pad(w.float(), (0, pi, 0, po))
    t = wp.reshape((o + po) // 128, 128, (i + pi) // 128, 128)
    amax = t.abs().amax(dim=(1, 3), keepdim=True).clamp_min(1e-30)
    s = pow2_ceil(amax * (1.0 / 448.0))
    q = round_e4m3(torch.clamp(t / s, -448.0, 448.0))
    q = q.reshape(o + po, i + pi)[:o, :i]
    return q, s.reshape(s.shape[0], s.shape[2])


def dequant_fp8_weight(q, s):
    o, i = q.shape
    full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:o, :i]
    return q * full


def quant_fp4_weight(w):
    """[..., out, in] -> (e2m1 values as float, scale [..., out, in/32])."""
    shp = w.shape
    wb = w.float().reshape(*shp[:-1], shp[-1] // 32, 32)
    amax = wb.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    s = pow2_ceil(amax * (1.0 / 6.0))
    q = round_e2m1(torch.clamp(wb / s, -6.0, 6.0))
    return q.reshape(shp), s.squeeze(-1)


def dequant_fp4_weight(q, s):
    return q * s.repeat_interleave(32, -1)


def fake_fp8(w):
    with torch.no_grad():
        q, s = quant_fp8_weight(w)
        d = dequant_fp8_weight(q, s)
    return ste(w, d)


def fake_fp4(w):
    with torch.no_grad():
        q, s = quant_fp4_weight(w)
        d = dequant_fp4_weight(q, s)
    return ste(w, d)


# ----------------------------------------------------------------------------- primitive ops

def lin_q(x, w, kind):
    """Product with an FP8- (kind 'fp8') or FP4-stored (kind 'fp4') weight. In ref mode w holds the
    dequantised stored values and the input gets the per-token 1x128 E4M3 activation quantisation;
    the output is bf16. In train mode the weight is fake-quantised (STE) and autocast does bf16."""
    if NUMERICS == "ref":
        return bf(F.linear(qdq_fp8_blocks(x, 128), w))
    return F.linear(x, fake_fp8(w) if kind == "fp8" else fake_fp4(w))


def rmsnorm(x, w, eps):
    xf = x.float()
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return bf(w.float() * y)


def yarn_freqs(cfg, compressed):
    dim = cfg.rope_dim
    base = cfg.compress_rope_theta if compressed else cfg.rope_theta
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if compressed and cfg.original_seq_len > 0:
        def corr(nrot):
            return dim * math.log(cfg.original_seq_len / (nrot * 2 * math.pi)) / (2 * math.log(base))
        lo = max(math.floor(corr(cfg.beta_fast)), 0)
        hi = min(math.ceil(corr(cfg.beta_slow)), dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / cfg.rope_factor * (1 - smooth) + freqs * smooth
    return freqs


def rope_tables(freqs, positions):
    ang = torch.outer(positions.float(), freqs.to(positions.device))
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin, inverse=False):
    """Rotate the last len(cos[0])*2 dims of x, adjacent pairs as complex numbers. x [..., T, (H,) d];
    cos/sin [T, rd/2]. fp32 math, then bf16 in ref mode."""
    rd = cos.shape[-1] * 2
    head, tail = x[..., :-rd], x[..., -rd:]
    t = tail.float().reshape(*tail.shape[:-1], rd // 2, 2)
    if x.dim() == cos.dim() + 2:  # [B,T,H,d]
        c, s = cos[:, None, :], sin[:, None, :]
    else:  # [B,T,d]
        c, s = cos, sin
    if inverse:
        s = -s
    re = t[..., 0] * c - t[..., 1] * s
    im = t[..., 0] * s + t[..., 1] * c
    out = torch.stack([re, im], -1).reshape(tail.shape)
    return torch.cat([head.float() if NUMERICS == "ref" else head, bf(out).to(head.dtype)], -1)


_HAD = {}


def hadamard(x):
    n = x.shape[-1]
    key = (n, str(x.device))
    if key not in _HAD:
        h = torch.ones(1, 1)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        _HAD[key] = (h * n ** -0.5).to(x.device)
    return bf(torch.matmul(x.float(), _HAD[key]))


# ----------------------------------------------------------------------------- modules

def P(*shape):
    return nn.Parameter(torch.zeros(*shape))


class Compressor(nn.Module):
    def __init__(self, cfg, ratio, width, indexer):
        super().__init__()
        self.ratio, self.c, self.overlap, self.indexer = ratio, width, ratio == 4, indexer
        co = 2 if self.overlap else 1
        self.ape = P(ratio, co * width)
        self.wkv = P(co * width, cfg.dim)
        self.wgate = P(co * width, cfg.dim)
        self.norm = P(width)
        self.eps = cfg.eps

    def forward(self, a, cos_c, sin_c):
        """a [B,T,D] -> entries [B, T//ratio, width] (RoPE at each block's first position)."""
        B, T, _ = a.shape
        r, c = self.ratio, self.c
        n = T // r
        if n == 0:
            return None
        with torch.autocast("cuda", enabled=False) if a.is_cuda else _null():
            x = a[:, :n * r].float()
            kv = F.linear(x, self.wkv.float())
            sc = F.linear(x, self.wgate.float())
            kv = kv.reshape(B, n, r, -1)
            sc = sc.reshape(B, n, r, -1) + self.ape
            if self.overlap:
                a_prev = torch.cat([kv.new_zeros(B, 1, r, c), kv[:, :-1, :, :c]], 1)
                kv = torch.cat([a_prev, kv[..., c:]], 2)
                s_prev = torch.cat([sc.new_full((B, 1, r, c), float("-inf")), sc[:, :-1, :, :c]], 1)
                sc = torch.cat([s_prev, sc[..., c:]], 2)
            e = (kv * sc.softmax(dim=2)).sum(2)
        e = rmsnorm(bf(e), self.norm, self.eps)
        e = apply_rope(e, cos_c[:n], sin_c[:n])
        if self.indexer:
            e = hadamard(e)
            q = qdq_fp4_blocks(e, 32)
        else:
            q = torch.cat([qdq_fp8_blocks(e[..., :-cos_c.shape[-1] * 2], 64), e[..., -cos_c.shape[-1] * 2:].float()], -1)
        return q if NUMERICS == "ref" else ste(e, q.to(e.dtype))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class Indexer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wq_b = P(cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank)
        self.weights_proj = P(cfg.index_n_heads, cfg.dim)
        self.compressor = Compressor(cfg, 4, cfg.index_head_dim, True)

    def forward(self, a, cq, cos, sin, cos_c, sin_c):
        """Returns (scores [B,T,n] fp32 with -inf where not visible, n)."""
        cfg = self.cfg
        B, T, _ = a.shape
        Hi, di = cfg.index_n_heads, cfg.index_head_dim
        k = self.compressor(a, cos_c, sin_c)
        if k is None:
            return None
        n = k.shape[1]
        q = lin_q(cq, self.wq_b, "fp8").reshape(B, T, Hi, di)
        q = apply_rope(q, cos, sin)
        q = hadamard(q)
        q = qdq_fp4_blocks(q, 32) if NUMERICS == "ref" else ste(q, qdq_fp4_blocks(q, 32).to(q.dtype))
        if NUMERICS == "ref":
            w = bf(F.linear(a, self.weights_proj))
            w = bf(w * (di ** -0.5 * Hi ** -0.5))
            s = bf(torch.einsum("bthd,bnd->bthn", q, k))
            s = bf(s.relu() * w[..., None])
            s = bf(s.sum(2))
        else:
            w = F.linear(a, self.weights_proj) * (di ** -0.5 * Hi ** -0.5)
            s = torch.einsum("bthd,bnd->bthn", q, k).float().relu()
            s = (s * w.float()[..., None]).sum(2)
        vis = torch.arange(n, device=a.device)[None, :] < ((torch.arange(T, device=a.device) + 1) // 4)[:, None]
        return s.masked_fill(~vis[None], float("-inf"))


class Attention(nn.Module):
    def __init__(self, cfg, li):
        super().__init__()
        self.cfg = cfg
        self.ratio = cfg.compress_ratios[li]
        H, d, D = cfg.n_heads, cfg.head_dim, cfg.dim
        self.attn_sink = P(H)
        self.wq_a = P(cfg.q_lora_rank, D)
        self.q_norm = P(cfg.q_lora_rank)
        self.wq_b = P(H * d, cfg.q_lora_rank)
        self.wkv = P(d, D)
        self.kv_norm = P(d)
        self.wo_a = P(cfg.o_groups * cfg.o_lora_rank, H * d // cfg.o_groups)
        self.wo_b = P(D, cfg.o_groups * cfg.o_lora_rank)
        if self.ratio:
            self.compressor = Compressor(cfg, self.ratio, d, False)
            self.indexer = Indexer(cfg) if self.ratio == 4 else None
        self.register_buffer("freqs", yarn_freqs(cfg, self.ratio != 0), persistent=False)
        self.aux = None  # indexer KL loss of the last train-mode forward

    def forward(self, a):
        cfg = self.cfg
        B, T, D = a.shape
        H, d, rd, W = cfg.n_heads, cfg.head_dim, cfg.rope_dim, cfg.window
        pos = torch.arange(T, device=a.device)
        cos, sin = rope_tables(self.freqs, pos)
        cq = rmsnorm(lin_q(a, self.wq_a, "fp8"), self.q_norm, cfg.eps)
        q = lin_q(cq, self.wq_b, "fp8").reshape(B, T, H, d)
        if NUMERICS == "ref":
            sq = bf(q * q)
            m = bf(bf(sq.mean(-1, keepdim=True)) + cfg.eps)
            q = bf(q * bf(torch.rsqrt(m)))
        else:
            qf = q.float()
            q = qf * torch.rsqrt(qf.square().mean(-1, keepdim=True) + cfg.eps)
        q = apply_rope(q, cos, sin)
        kv = rmsnorm(lin_q(a, self.wkv, "fp8"), self.kv_norm, cfg.eps)
        kv = apply_rope(kv, cos, sin)
        kvq = torch.cat([qdq_fp8_blocks(kv[..., :-rd], 64), kv[..., -rd:].float()], -1)
        kv = kvq if NUMERICS == "ref" else ste(kv, kvq.to(kv.dtype))

        ck, cmask, cvis, iscore = None, None, None, None
        if self.ratio:
            cpos = torch.arange(0, T, self.ratio, device=a.device)
            cos_c, sin_c = rope_tables(self.freqs, cpos)
            ck = self.compressor(a, cos_c, sin_c)
            if ck is not None:
                n = ck.shape[1]
                cvis = torch.arange(n, device=a.device)[None, :] < ((pos + 1) // self.ratio)[:, None]
                cmask = cvis[None].expand(B, T, n)
                if self.indexer is not None:
                    if NUMERICS == "ref":
                        iscore = self.indexer(a, cq, cos, sin, cos_c, sin_c)
                    else:
                        iscore = self.indexer(a.detach(), cq.detach(), cos, sin, cos_c, sin_c)
                    K = min(cfg.index_topk, n)
                    if NUMERICS == "ref":
                        order = torch.sort(iscore, dim=-1, descending=True, stable=True)[1][..., :K]
                    else:
                        order = iscore.detach().topk(K, dim=-1)[1]
                    sel = torch.zeros(B, T, n, dtype=torch.bool, device=a.device)
                    sel.scatter_(-1, order, True)
                    cmask = sel & cvis[None]
        o, cfull = sparse_attention(q, kv, ck, cmask, cvis, self.attn_sink, W, d ** -0.5)
        if NUMERICS == "train" and iscore is not None and torch.is_grad_enabled():
            self.aux = indexer_kl(iscore, cfull.detach(), pos, self.ratio)
        o = apply_rope(o, cos, sin, inverse=True)
        G = cfg.o_groups
        o = o.reshape(B, T, G, -1)
        wa = self.wo_a if NUMERICS == "ref" else fake_fp8(self.wo_a)
        z = bf(torch.einsum("btgi,gri->btgr", o, wa.reshape(G, cfg.o_lora_rank, -1)))
        return lin_q(z.reshape(B, T, -1), self.wo_b, "fp8")


def indexer_kl(iscore, cscores, pos, ratio):
    """KL(main attention's distribution over visible compressed entries, summed over heads || softmax of
    the indexer's scores). cscores [B,H,T,n] already -inf where not visible."""
    valid = (pos + 1) // ratio > 0
    if not bool(valid.any()):
        return None
    tgt = cscores.float().softmax(-1).mean(1)[:, valid]  # [B,T',n]
    logp = iscore.float()[:, valid].log_softmax(-1)
    logp = logp.masked_fill(tgt == 0, 0.0)
    kl = (tgt * (torch.log(tgt.clamp_min(1e-30)) - logp)).sum(-1)
    return kl.mean()


_WMASK = {}


def sparse_attention(q, kv, ck, cmask, cvis, sink, W, scale):
    """One softmax over the sliding window (W keys up to and including the query) and the compressed
    entries cmask allows, with a per-head sink in the denominator only. q [B,T,H,d], kv [B,T,d],
    ck [B,n,d] | None, cmask [B,T,n] (visible and selected), cvis [T,n] (visible). Returns (o [B,T,H,d],
    scores over all visible compressed entries [B,H,T,n] (the indexer's training target) | None)."""
    B, T, H, d = q.shape
    nb = (T + W - 1) // W
    Tp = nb * W
    if Tp != T:
        q = F.pad(q, (0, 0, 0, 0, 0, Tp - T))
        kv = F.pad(kv, (0, 0, 0, Tp - T))
    key = (W, nb, str(q.device))
    if key not in _WMASK:
        i = torch.arange(W)[:, None]
        k = torch.arange(2 * W)[None, :]
        m = (k >= i + 1) & (k <= i + W)  # key (n-1)*W+k is within [p-W+1, p] for query p = n*W+i
        m = m[None].repeat(nb, 1, 1)
        m[0, :, :W] = False  # no block before the first
        _WMASK[key] = m.to(q.device)
    wmask = _WMASK[key]
    kvp = torch.cat([kv.new_zeros(B, W, d), kv], 1)
    kb = torch.cat([kvp[:, :Tp].reshape(B, nb, W, d), kvp[:, W:].reshape(B, nb, W, d)], 2)  # [B,nb,2W,d]
    qb = q.reshape(B, nb, W, H, d)
    sw = torch.einsum("bnqhd,bnkd->bhnqk", qb, kb).float() * scale
    sw = sw.masked_fill(~wmask[None, None], float("-inf")).reshape(B, H, Tp, 2 * W)
    cfull = None
    if ck is not None:
        cf = torch.einsum("bthd,bnd->bhtn", q[:, :T], ck).float() * scale  # [B,H,T,n]
        cfull = cf.masked_fill(~cvis[None, None], float("-inf"))
        sc = cf.masked_fill(~cmask[:, None], float("-inf"))
        if Tp != T:
            sc = F.pad(sc, (0, 0, 0, Tp - T), value=float("-inf"))
        s = torch.cat([sw, sc], -1)
    else:
        s = sw
    M = s.amax(-1, keepdim=True).detach()
    p = torch.exp(s - M)
    den = p.sum(-1, keepdim=True) + torch.exp(sink.float()[None, :, None, None] - M)
    pv = bf(p)  # the reference kernel rounds the un-normalised probabilities to bf16 before P.V
    pw = pv[..., :2 * W].reshape(B, H, nb, W, 2 * W)
    o = torch.einsum("bhnqk,bnkd->bnqhd", pw.to(kb.dtype), kb).reshape(B, Tp, H, d).float()
    if ck is not None:
        pc = pv[..., 2 * W:][:, :, :T]
        oc = torch.einsum("bhtn,bnd->bthd", pc.to(ck.dtype), ck).float()
        o = o + (F.pad(oc, (0, 0, 0, 0, 0, Tp - T)) if Tp != T else oc)
    o = o / den.permute(0, 2, 1, 3)
    return bf(o)[:, :T], cfull


class MoE(nn.Module):
    def __init__(self, cfg, li):
        super().__init__()
        self.cfg = cfg
        E, D, I = cfg.n_routed_experts, cfg.dim, cfg.moe_inter
        self.hash = li < cfg.n_hash_layers
        self.gate_w = P(E, D)
        if self.hash:
            self.register_buffer("tid2eid", torch.zeros(cfg.vocab_size, cfg.topk, dtype=torch.long))
        else:
            self.register_buffer("bias", torch.zeros(E))
        self.w1 = P(E, I, D)
        self.w2 = P(E, D, I)
        self.w3 = P(E, I, D)
        S = cfg.n_shared_experts * I
        self.s1 = P(S, D)
        self.s2 = P(D, S)
        self.s3 = P(S, D)
        self.load = None

    def forward(self, a, ids):
        cfg = self.cfg
        B, T, D = a.shape
        E, L = cfg.n_routed_experts, cfg.swiglu_limit
        x = a.reshape(-1, D)
        with torch.autocast("cuda", enabled=False) if a.is_cuda else _null():
            s = F.softplus(F.linear(x.float(), self.gate_w.float())).sqrt()
        if self.hash:
            idx = self.tid2eid[ids.reshape(-1)]
        else:
            idx = (s + self.bias).topk(cfg.topk, dim=-1)[1]
        g = s.gather(1, idx)
        g = g / g.sum(-1, keepdim=True) * cfg.route_scale
        if NUMERICS == "ref":
            xq = qdq_fp8_blocks(x, 128)
            y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
            for e in range(E):
                hit = (idx == e)
                rows = hit.any(-1).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                we = (g * hit).sum(-1)[rows]
                h1 = bf(F.linear(xq[rows], self.w1[e])).clamp(max=L)
                h3 = bf(F.linear(xq[rows], self.w3[e])).clamp(-L, L)
                h = bf(we[:, None] * (F.silu(h1) * h3))
                y[rows] += bf(F.linear(qdq_fp8_blocks(h, 128), self.w2[e]))
            h1 = bf(F.linear(xq, self.s1)).clamp(max=L)
            h3 = bf(F.linear(xq, self.s3)).clamp(-L, L)
            sh = bf(F.linear(qdq_fp8_blocks(bf(F.silu(h1) * h3), 128), self.s2))
            return bf(y + sh).reshape(B, T, D)
        if not self.hash and self.training:
            self.load = torch.bincount(idx.reshape(-1), minlength=E).detach()
        w1, w2, w3 = fake_fp4(self.w1), fake_fp4(self.w2), fake_fp4(self.w3)
        if MOE_DENSE:  # every expert on every token, unselected ones weighted 0 (the equality reference)
            wt = torch.zeros(x.shape[0], E, device=x.device, dtype=torch.float32).scatter(1, idx, g)
            h1 = torch.einsum("nd,eid->eni", x, w1).float().clamp(max=L)
            h3 = torch.einsum("nd,eid->eni", x, w3).float().clamp(-L, L)
            h = F.silu(h1) * h3 * wt.t()[:, :, None]
            y = torch.einsum("eni,edi->nd", h, w2)
        else:
            y = moe_dispatch(x, idx, g, w1, w2, w3, L)
        h1 = F.linear(x, fake_fp8(self.s1)).float().clamp(max=L)
        h3 = F.linear(x, fake_fp8(self.s3)).float().clamp(-L, L)
        y = y + F.linear(F.silu(h1) * h3, fake_fp8(self.s2))
        return y.reshape(B, T, D)


MOE_DENSE = False  # train numerics: True = the dense all-experts product (same math, 4x the work)


def moe_dispatch(x, idx, g, w1, w2, w3, L):
    """Routed experts on the selected (token, expert) pairs only, without a Python loop over experts:
    pairs sorted by expert into an [E, C, D] buffer (C = the busiest expert's count, padding rows are
    zero and get gate weight 0), three batched products, then each pair's output added back to its
    token. Same math as the dense form (the gate weight multiplies before w2, as there)."""
    N, D = x.shape
    E = w1.shape[0]
    K = idx.shape[1]
    fe = idx.reshape(-1)
    order = torch.argsort(fe)
    es = fe[order]
    tok = torch.div(order, K, rounding_mode="floor")
    counts = torch.bincount(fe, minlength=E)
    C = int(counts.max())
    pos = torch.arange(fe.numel(), device=x.device) - (torch.cumsum(counts, 0) - counts)[es]
    buf = x.new_zeros(E, C, D).index_put((es, pos), x[tok])
    gb = torch.zeros(E, C, device=x.device, dtype=torch.float32).index_put((es, pos), g.reshape(-1)[order].float())
    h1 = torch.matmul(buf, w1.transpose(1, 2)).float().clamp(max=L)
    h3 = torch.matmul(buf, w3.transpose(1, 2)).float().clamp(-L, L)
    h = F.silu(h1) * h3 * gb[:, :, None]
    out = torch.matmul(h, w2.transpose(1, 2))
    return torch.zeros(N, D, device=x.device, dtype=torch.float32).index_add(0, tok, out[es, pos].float())


def hc_pre(X, fn, scale, base, cfg):
    N = cfg.hc
    B, T = X.shape[:2]
    x = X.reshape(B, T, -1).float()
    rs = torch.rsqrt(x.square().mean(-1, keepdim=True) + cfg.eps)
    mixes = F.linear(x, fn.float()) * rs
    pre = torch.sigmoid(mixes[..., :N] * scale[0] + base[:N]) + cfg.hc_eps
    post = 2 * torch.sigmoid(mixes[..., N:2 * N] * scale[1] + base[N:2 * N])
    comb = mixes[..., 2 * N:].reshape(B, T, N, N) * scale[2] + base[2 * N:].reshape(N, N)
    comb = comb.softmax(-1) + cfg.hc_eps
    comb = comb / (comb.sum(-2, keepdim=True) + cfg.hc_eps)
    for _ in range(cfg.sinkhorn_iters - 1):
        comb = comb / (comb.sum(-1, keepdim=True) + cfg.hc_eps)
        comb = comb / (comb.sum(-2, keepdim=True) + cfg.hc_eps)
    u = bf((pre[..., None] * X.float()).sum(2))
    return u, post, comb


def hc_post(f, X, post, comb):
    y = post[..., None] * f.float()[:, :, None, :] + torch.einsum("btjk,btjd->btkd", comb, X.float())
    return bf(y)


class Block(nn.Module):
    def __init__(self, cfg, li):
        super().__init__()
        self.cfg = cfg
        N, D = cfg.hc, cfg.dim
        mix = (2 + N) * N
        self.hc_attn_fn = P(mix, N * D)
        self.hc_attn_base = P(mix)
        self.hc_attn_scale = P(3)
        self.hc_ffn_fn = P(mix, N * D)
        self.hc_ffn_base = P(mix)
        self.hc_ffn_scale = P(3)
        self.attn_norm = P(D)
        self.ffn_norm = P(D)
        self.attn = Attention(cfg, li)
        self.ffn = MoE(cfg, li)

    def forward(self, X, ids):
        cfg = self.cfg
        amp = torch.autocast("cuda", enabled=False) if X.is_cuda else _null()
        with amp:
            u, post, comb = hc_pre(X, self.hc_attn_fn, self.hc_attn_scale, self.hc_attn_base, cfg)
            a = rmsnorm(u, self.attn_norm, cfg.eps)
        f = self.attn(a)
        with amp:
            X = hc_post(f, X, post, comb)
            u, post, comb = hc_pre(X, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base, cfg)
            a = rmsnorm(u, self.ffn_norm, cfg.eps)
        f = self.ffn(a, ids)
        with amp:
            X = hc_post(f, X, post, comb)
        return X


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        N, D = cfg.hc, cfg.dim
        self.embed = P(cfg.vocab_size, D)
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.norm = P(D)
        self.head = P(cfg.vocab_size, D)
        self.hc_head_fn = P(N, N * D)
        self.hc_head_base = P(N)
        self.hc_head_scale = P(1)

    def hidden(self, ids):
        """ids [B,T] -> final normalised hidden [B,T,D] (bf16 values in ref mode)."""
        cfg = self.cfg
        e = F.embedding(ids, self.embed)
        e = bf(e.float()) if NUMERICS == "ref" else e
        X = e[:, :, None, :].expand(-1, -1, cfg.hc, -1)
        for layer in self.layers:
            X = layer(X, ids)
        amp = torch.autocast("cuda", enabled=False) if X.is_cuda else _null()
        with amp:
            B, T = X.shape[:2]
            x = X.reshape(B, T, -1).float()
            rs = torch.rsqrt(x.square().mean(-1, keepdim=True) + cfg.eps)
            mixes = F.linear(x, self.hc_head_fn.float()) * rs
            pre = torch.sigmoid(mixes * self.hc_head_scale + self.hc_head_base) + cfg.hc_eps
            h = bf((pre[..., None] * X.float()).sum(2))
            return rmsnorm(h, self.norm, cfg.eps)

    def forward(self, ids):
        h = self.hidden(ids)
        if NUMERICS == "ref":
            return F.linear(h.float(), self.head.float())
        return F.linear(h, self.head)

    def aux_losses(self):
        out = []
        for l in self.layers:
            if l.attn.aux is not None:
                out.append(l.attn.aux)
                l.attn.aux = None
        return out


# ----------------------------------------------------------------------------- init

def init_weights(model, seed=0):
    """Training init: normal matrices (std 0.02, output projections scaled by 1/sqrt(2L)), unit norms,
    mHC close to identity mixing, random balanced hash table."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    std = 0.02
    out_std = std / math.sqrt(2 * cfg.n_layers)
    N = cfg.hc
    for name, p in model.named_parameters():
        t = p.data
        leaf = name.split(".")[-1]
        if leaf in ("norm", "attn_norm", "ffn_norm", "q_norm", "kv_norm"):
            t.fill_(1.0)
        elif leaf.endswith("_base"):
            t.zero_()
            if t.numel() == (2 + N) * N:
                t[2 * N:] = (torch.eye(N) * 4.0).reshape(-1)
        elif leaf.endswith("_scale"):
            t.fill_(1.0)
        elif leaf.endswith("_fn"):
            t.copy_(torch.randn(t.shape, generator=g) * 1e-3)
        elif leaf == "attn_sink" or leaf == "ape":
            t.zero_()
        elif leaf in ("wo_b", "w2", "s2"):
            t.copy_(torch.randn(t.shape, generator=g) * out_std)
        elif leaf == "embed":
            t.copy_(torch.randn(t.shape, generator=g) * 1.0)
        else:
            t.copy_(torch.randn(t.shape, generator=g) * std)
    for l in model.layers:
        if l.ffn.hash:
            E, k = cfg.n_routed_experts, cfg.topk
            ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(cfg.vocab_size)])
            l.ffn.tid2eid.copy_(ids)
