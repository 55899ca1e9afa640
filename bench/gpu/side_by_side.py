#!/usr/bin/env python3
"""transformers' DeepseekV4 (eager PyTorch on the GPU) and the project's CUDA engine on the SAME official
checkpoint, in the same run: speed (prefill and decode tok/s, their ratio) and logit agreement.

  python3 bench/gpu/side_by_side.py --engine BUILD/bench/gpu/bench-gpu-restore --out DIR \
      [--model tiny=tests/fixtures/v4-tiny-a] [--model mid=/tmp/mid] [--prompt 512] [--decode 64] [--reps 3]
  python3 bench/gpu/side_by_side.py --selftest     # CPU, no transformers: the conversion against ckpt.py

Both sides run prefill + N teacher-forced decode steps of the same tokens (prefill = one call on the prompt, then
one call per token; logits of the prompt's last position and of every step, copied to the host each step). The
engine's side is `bench-gpu-restore logits` (a subprocess that exits before transformers loads). For the tiny
fixture both are also compared with the golden logits of DeepSeek's reference (its 7 cases, 117 rows).

transformers is tried three ways (each one's failure is recorded, not fatal):
  - "unchanged" (tiny only, --unchanged): AutoModelForCausalLM.from_pretrained on the official directory as it
    is (config.json with its fp8 quantization_config, F8_E4M3/E8M0 tiles, I8-packed FP4 experts, DeepSeek's
    tensor names). transformers 5.17 loads it with no missing key, keeping the FP8/FP4 weights, but its FP8
    products need the `kernels` package (0.16.x), which the GPU image lacks and cannot fetch;
  - "dequantized": the same directory with FineGrainedFP8Config(dequantize=True): transformers' own
    conversion to bf16 at load;
  - "converted": the model built from the same config.json (quantization_config removed, eager attention) and
    its weights loaded from a state dict this script makes from the official tensors: FP8 tiles and FP4 experts
    dequantised exactly (e4m3/e2m1 value x 2^(e8m0-127) is exact in bf16), experts stacked into gate_up_proj
    [E, 2I, H] (w1 then w3) and down_proj [E, H, I], names mapped (NAME_MAP below), mtp.* dropped (the HF
    model has no MTP block). Parameters listed in the model's _keep_in_fp32_modules_strict are kept in fp32,
    as from_pretrained keeps them; everything else is bf16.
In the bf16 models the fp32-weight RMSNorms' outputs are cast back to bf16 (cast_norm_outputs): without it
transformers 5.17's eager bf16 forward stops at the first product after a norm (fp32 input, bf16 weight).
Agreement per logit row: rms(d)/sigma and max|d|/sigma (sigma = std of the reference row), top-1 match, Pearson r.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import ckpt  # noqa: E402  (official-format reader and decoders)

warnings.filterwarnings("ignore", message=".*not writable.*")

# ------------------------------------------------------------------------------------------ official -> HF names

# (official regex, HF name) for one tensor each; experts are stacked separately.
NAME_MAP = [
    (r"embed\.weight", "model.embed_tokens.weight"),
    (r"head\.weight", "lm_head.weight"),
    (r"norm\.weight", "model.norm.weight"),
    (r"hc_head_fn", "model.hc_head.hc_fn"),
    (r"hc_head_base", "model.hc_head.hc_base"),
    (r"hc_head_scale", "model.hc_head.hc_scale"),
    (r"layers\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"layers\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"layers\.(\d+)\.hc_attn_(fn|base|scale)", r"model.layers.\1.attn_hc.\2"),
    (r"layers\.(\d+)\.hc_ffn_(fn|base|scale)", r"model.layers.\1.ffn_hc.\2"),
    (r"layers\.(\d+)\.attn\.wq_a", r"model.layers.\1.self_attn.q_a_proj.weight"),
    (r"layers\.(\d+)\.attn\.q_norm\.weight", r"model.layers.\1.self_attn.q_a_norm.weight"),
    (r"layers\.(\d+)\.attn\.wq_b", r"model.layers.\1.self_attn.q_b_proj.weight"),
    (r"layers\.(\d+)\.attn\.wkv", r"model.layers.\1.self_attn.kv_proj.weight"),
    (r"layers\.(\d+)\.attn\.kv_norm\.weight", r"model.layers.\1.self_attn.kv_norm.weight"),
    (r"layers\.(\d+)\.attn\.wo_a", r"model.layers.\1.self_attn.o_a_proj.weight"),
    (r"layers\.(\d+)\.attn\.wo_b", r"model.layers.\1.self_attn.o_b_proj.weight"),
    (r"layers\.(\d+)\.attn\.attn_sink", r"model.layers.\1.self_attn.sinks"),
    (r"layers\.(\d+)\.attn\.compressor\.ape", r"model.layers.\1.self_attn.compressor.position_bias"),
    (r"layers\.(\d+)\.attn\.compressor\.wkv\.weight", r"model.layers.\1.self_attn.compressor.kv_proj.weight"),
    (r"layers\.(\d+)\.attn\.compressor\.wgate\.weight", r"model.layers.\1.self_attn.compressor.gate_proj.weight"),
    (r"layers\.(\d+)\.attn\.compressor\.norm\.weight", r"model.layers.\1.self_attn.compressor.kv_norm.weight"),
    (r"layers\.(\d+)\.attn\.indexer\.wq_b", r"model.layers.\1.self_attn.compressor.indexer.q_b_proj.weight"),
    (r"layers\.(\d+)\.attn\.indexer\.weights_proj\.weight",
     r"model.layers.\1.self_attn.compressor.indexer.scorer.weights_proj.weight"),
    (r"layers\.(\d+)\.attn\.indexer\.compressor\.ape", r"model.layers.\1.self_attn.compressor.indexer.position_bias"),
    (r"layers\.(\d+)\.attn\.indexer\.compressor\.wkv\.weight",
     r"model.layers.\1.self_attn.compressor.indexer.kv_proj.weight"),
    (r"layers\.(\d+)\.attn\.indexer\.compressor\.wgate\.weight",
     r"model.layers.\1.self_attn.compressor.indexer.gate_proj.weight"),
    (r"layers\.(\d+)\.attn\.indexer\.compressor\.norm\.weight",
     r"model.layers.\1.self_attn.compressor.indexer.kv_norm.weight"),
    (r"layers\.(\d+)\.ffn\.gate\.weight", r"model.layers.\1.mlp.gate.weight"),
    (r"layers\.(\d+)\.ffn\.gate\.bias", r"model.layers.\1.mlp.gate.e_score_correction_bias"),
    (r"layers\.(\d+)\.ffn\.gate\.tid2eid", r"model.layers.\1.mlp.gate.tid2eid"),
    (r"layers\.(\d+)\.ffn\.shared_experts\.w1", r"model.layers.\1.mlp.shared_experts.gate_proj.weight"),
    (r"layers\.(\d+)\.ffn\.shared_experts\.w3", r"model.layers.\1.mlp.shared_experts.up_proj.weight"),
    (r"layers\.(\d+)\.ffn\.shared_experts\.w2", r"model.layers.\1.mlp.shared_experts.down_proj.weight"),
]
_EXPERT = re.compile(r"layers\.(\d+)\.ffn\.experts\.(\d+)\.w([123])$")

# ------------------------------------------------------------------------------------------ dequantisation (torch)

_E4M3 = torch.from_numpy(ckpt.E4M3.copy())
_E2M1 = torch.from_numpy(ckpt.E2M1.copy())


def _u8(a, dev):
    return torch.from_numpy(np.ascontiguousarray(a).view(np.uint8)).to(dev)


def _e8m0(s):
    """uint8 tensor -> float32 2^(s-127), exactly."""
    return torch.ldexp(torch.ones(s.shape, dtype=torch.float32, device=s.device), s.to(torch.int32) - 127)


def dq_fp8(w, s, dev):
    """F8_E4M3 [o, i] with E8M0 [ceil(o/128), ceil(i/128)] tiles -> float32 on dev."""
    w, s = _u8(w, dev), _u8(s, dev)
    o, i = w.shape
    sc = _e8m0(s).repeat_interleave(128, 0).repeat_interleave(128, 1)[:o, :i]
    return _E4M3.to(dev)[w.long()] * sc


def dq_fp4(w, s, dev):
    """I8 [o, i/2] (low nibble = even K index) with E8M0 [o, i/32] -> float32 [o, i] on dev."""
    w, s = _u8(w, dev), _u8(s, dev)
    t = _E2M1.to(dev)
    v = torch.stack([t[(w & 15).long()], t[(w >> 4).long()]], -1).reshape(w.shape[0], w.shape[1] * 2)
    return v * _e8m0(s).repeat_interleave(32, 1)


def plain(t, dev):
    dt, _, a = t
    if dt == "BF16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).to(dev).view(torch.bfloat16)
    if dt == "F32":
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    if dt in ("I64", "I32"):
        return torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)).to(dev)
    raise ValueError(f"unexpected dtype {dt}")


def read_official(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(ckpt.read_safetensors(os.path.join(d, f)))
    return t


def hf_state_dict(tensors, cfg, dev, wdtype=torch.bfloat16):
    """Official tensors -> {HF name: tensor}. FP8/FP4 weights dequantised to wdtype (exact in bf16)."""
    sd, used = {}, set()
    experts = {}
    for name, t in tensors.items():
        if name.startswith("mtp.") or name.endswith(".scale"):  # scales go with their weight
            continue
        base = name[:-len(".weight")] if name.endswith(".weight") else name
        m = _EXPERT.match(base)
        if m:
            experts.setdefault(int(m.group(1)), {})[(int(m.group(2)), int(m.group(3)))] = base
            continue
        for pat, rep in NAME_MAP:
            key = base if t[0] in ("F8_E4M3", "I8") else name
            if re.fullmatch(pat, key):
                hf = re.sub(pat, rep, key)
                if t[0] == "F8_E4M3":
                    v = dq_fp8(t[2], tensors[base + ".scale"][2], dev).to(wdtype)
                    used.add(base + ".scale")
                elif t[0] == "I8":
                    raise ValueError(f"{name}: I8 outside the routed experts")
                else:
                    v = plain(t, dev)
                assert hf not in sd, f"{hf} mapped twice"
                sd[hf] = v
                used.add(name)
                break
        else:
            raise KeyError(f"no HF name for the official tensor {name}")
    E, inter, H = cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["hidden_size"]
    for layer, ws in sorted(experts.items()):
        gu = torch.empty(E, 2 * inter, H, dtype=wdtype, device=dev)
        dn = torch.empty(E, H, inter, dtype=wdtype, device=dev)
        for e in range(E):
            for k, dst in ((1, gu[e, :inter]), (3, gu[e, inter:]), (2, dn[e])):
                b = ws[(e, k)]
                dst.copy_(dq_fp4(tensors[b + ".weight"][2], tensors[b + ".scale"][2], dev).to(wdtype))
                used |= {b + ".weight", b + ".scale"}
        sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = gu
        sd[f"model.layers.{layer}.mlp.experts.down_proj"] = dn
    left = [n for n in tensors if n not in used and not n.startswith("mtp.")]
    assert not left, f"official tensors not converted: {left[:5]}"
    return sd


# ------------------------------------------------------------------------------------------ agreement

def agreement(ref, x):
    ref, x = np.asarray(ref, np.float64), np.asarray(x, np.float64)
    d = x - ref
    sig = ref.std(1)
    rms = np.sqrt((d ** 2).mean(1)) / sig
    mx = np.abs(d).max(1) / sig
    rc, xc = ref - ref.mean(1, keepdims=True), x - x.mean(1, keepdims=True)
    r = (rc * xc).sum(1) / np.sqrt((rc ** 2).sum(1) * (xc ** 2).sum(1))
    top = int((ref.argmax(1) == x.argmax(1)).sum())
    return {"rows": int(ref.shape[0]), "rms_med": float(np.median(rms)), "rms_p90": float(np.percentile(rms, 90)),
            "rms_max": float(rms.max()), "max_med": float(np.median(mx)), "max_max": float(mx.max()),
            "r_min": float(r.min()), "top1": top}


def fmt_agree(a):
    return (f"| {a['rows']} | {a['rms_med']:.3f} | {a['rms_p90']:.3f} | {a['rms_max']:.3f} | {a['max_med']:.3f} | "
            f"{a['max_max']:.3f} | {a['r_min']:.3f} | {a['top1']}/{a['rows']} |")


# ------------------------------------------------------------------------------------------ the two runners

FLOAT_FIELDS = ("attention_dropout", "hc_eps", "initializer_range", "rms_norm_eps", "routed_scaling_factor",
                "swiglu_limit")


def cast_norm_outputs(model, log, what):
    """transformers keeps the RMSNorm weights in fp32 (_keep_in_fp32_modules_strict) and its RMSNorm returns
    weight(fp32) * x.to(input dtype), an fp32 tensor, which the bf16 products after it (q_a_proj, the router,
    the experts, lm_head) refuse. Cast each such norm's output back to its input's dtype (bf16): the reference
    rounds the normalised activation to bf16 at that point too."""
    n = 0
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if type(m).__name__.endswith("RMSNorm") and isinstance(w, torch.Tensor) and w.dtype == torch.float32:
            m.register_forward_hook(lambda mod, inp, out: out.to(inp[0].dtype) if out.dtype != inp[0].dtype else out)
            n += 1
    log.append(f"{what}: {n} fp32-weight RMSNorm outputs cast to their input dtype")


def run_engine(engine, model_dir, seqs, reps, work):
    """seqs: [(tokens list, P)] -> (list of [1+T, V] logits, timing json)."""
    tokf, outf = os.path.join(work, "tokens.i32"), os.path.join(work, "logits.f32")
    arr = [len(seqs)]
    for toks, P in seqs:
        arr += [P, len(toks) - P] + list(toks)
    np.asarray(arr, np.int32).tofile(tokf)
    r = subprocess.run([engine, "logits", "--model", model_dir, "--tokens", tokf, "--out", outf, "--reps", str(reps)],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{engine} logits exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    flat = np.fromfile(outf, np.float32)
    V = flat.size // sum(len(t) - P + 1 for t, P in seqs)
    out, at = [], 0
    for toks, P in seqs:
        n = (len(toks) - P + 1) * V
        out.append(flat[at:at + n].reshape(-1, V))
        at += n
    return out, info


def hf_forward(model, ids, pos0, past):
    pos = torch.arange(pos0, pos0 + ids.shape[1], device=ids.device)[None]
    kw = dict(input_ids=ids, position_ids=pos, past_key_values=past, use_cache=True)
    try:
        out = model(**kw, logits_to_keep=1)
    except TypeError:
        out = model(**kw)
    return out.logits[0, -1].float().cpu(), out.past_key_values


@torch.no_grad()
def run_hf(model, toks, P, dev):
    """Prefill toks[:P] then one step per toks[P+j]; -> ([1+T, V] logits, prefill s, [step s])."""
    ids = torch.tensor([toks], dtype=torch.long, device=dev)
    torch.cuda.synchronize() if dev == "cuda" else None
    t0 = time.perf_counter()
    row, past = hf_forward(model, ids[:, :P], 0, None)
    tp = time.perf_counter() - t0
    rows, steps = [row.numpy()], []
    for j in range(len(toks) - P):
        t0 = time.perf_counter()
        row, past = hf_forward(model, ids[:, P + j:P + j + 1], P + j, past)
        steps.append(time.perf_counter() - t0)
        rows.append(row.numpy())
    return np.stack(rows), tp, steps


def hf_config(cfg_json, log):
    import transformers
    from transformers import AutoConfig
    c = dict(cfg_json)
    c.pop("quantization_config", None)
    c.pop("model_type", None)
    for k in FLOAT_FIELDS:  # strict config classes reject an int for a float field
        if isinstance(c.get(k), int):
            c[k] = float(c[k])
    config = AutoConfig.for_model("deepseek_v4", **c)
    L = cfg_json["num_hidden_layers"]
    kinds = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
    want = [kinds[r] for r in cfg_json["compress_ratios"][:L]]
    want_mlp = ["hash_moe"] * cfg_json["num_hash_layers"] + ["moe"] * (L - cfg_json["num_hash_layers"])
    if getattr(config, "layer_types", None) != want:
        log.append(f"config: layer_types derived as {getattr(config, 'layer_types', None)}; set to {want}")
        config.layer_types = want
    if hasattr(config, "mlp_layer_types") and config.mlp_layer_types != want_mlp:
        log.append(f"config: mlp_layer_types derived as {config.mlp_layer_types}; set to {want_mlp}")
        config.mlp_layer_types = want_mlp
    rp = getattr(config, "rope_parameters", None)
    comp = rp.get("compress") if isinstance(rp, dict) else None
    if isinstance(comp, dict) and comp.get("rope_type", comp.get("type")) != "yarn":
        # rope_scaling (the released configs' key) did not reach the compressed layers' RoPE: set it
        rs = cfg_json["rope_scaling"]
        comp.update({"rope_type": "yarn", "factor": rs["factor"], "beta_fast": rs["beta_fast"],
                     "beta_slow": rs["beta_slow"], "attention_factor": 1.0,
                     "original_max_position_embeddings": rs["original_max_position_embeddings"]})
        log.append(f"config: compressed-layer RoPE had no YaRN; set from rope_scaling {rs}")
    log.append(f"transformers {transformers.__version__}: rope_parameters={getattr(config, 'rope_parameters', None)} "
               f"compress_rates={getattr(config, 'compress_rates', None)} "
               f"qk_rope_head_dim={getattr(config, 'qk_rope_head_dim', None)}")
    return config


def hf_converted(cfg_json, tensors, dev, log):
    from transformers import AutoModelForCausalLM
    config = hf_config(cfg_json, log)
    try:
        config._attn_implementation = "eager"
    except Exception:  # noqa: BLE001
        pass
    t0 = time.perf_counter()
    with torch.device(dev):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
        except TypeError:
            model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="eager")
    # Parameters as from_pretrained(dtype=bf16) leaves them: bf16, except the strict-fp32 modules.
    # Buffers stay as built (RoPE inv_freq in fp32; a blanket .to(bf16) would round them).
    keep = list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    n32 = 0
    for name, p in model.named_parameters():
        fp32 = any(k in name.split(".") for k in keep)
        p.data = p.data.to(torch.float32 if fp32 else torch.bfloat16)
        n32 += fp32
    for name, b in model.named_buffers():
        if b.is_floating_point() and any(k in name.split(".") for k in keep):
            b.data = b.data.float()
    t1 = time.perf_counter()
    sd = hf_state_dict(tensors, cfg_json, dev)
    t2 = time.perf_counter()
    res = model.load_state_dict(sd, strict=False)
    persistent = set(model.state_dict().keys())
    missing = [k for k in res.missing_keys if k in persistent]
    log.append(f"converted: model built {t1 - t0:.1f} s, state dict {t2 - t1:.1f} s ({len(sd)} tensors), "
               f"{n32} tensors kept fp32 ({keep}); missing {missing[:8]} ({len(missing)}), "
               f"unexpected {list(res.unexpected_keys)[:8]} ({len(res.unexpected_keys)})")
    if missing or res.unexpected_keys:
        have = model.state_dict()
        log.append("model state dict: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(have.items())[:120]))
        raise RuntimeError(f"state dict does not fit the model: missing {missing[:8]}, unexpected "
                           f"{list(res.unexpected_keys)[:8]}")
    del sd
    cast_norm_outputs(model, log, "converted")
    return model.eval()


def hf_dequantized(model_dir, dev, log):
    """The official directory as it is, dequantised to bf16 by transformers itself at load."""
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config
    t0 = time.perf_counter()
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, device_map=dev, attn_implementation="eager", output_loading_info=True,
        quantization_config=FineGrainedFP8Config(dequantize=True))
    info = {k: list(v)[:12] for k, v in info.items() if v}
    log.append(f"dequantized: from_pretrained {time.perf_counter() - t0:.1f} s; loading info {info}; weight dtypes "
               f"{sorted({str(p.dtype) for p in model.parameters()})}")
    if info.get("missing_keys"):
        raise RuntimeError(f"loaded with missing keys (left at their random init): {info['missing_keys'][:8]}")
    cast_norm_outputs(model, log, "dequantized")
    return model.eval()


def hf_unchanged(model_dir, dev, log):
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter()
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map=dev,
                                                       attn_implementation="eager", output_loading_info=True)
    info = {k: list(v)[:12] for k, v in info.items() if v}
    q = getattr(model.config, "quantization_config", None)
    log.append(f"unchanged: from_pretrained {time.perf_counter() - t0:.1f} s; loading info {info}; "
               f"quantization_config {q}; weight dtypes "
               f"{sorted({str(p.dtype) for p in model.parameters()})}")
    if info.get("missing_keys"):
        raise RuntimeError(f"loaded with missing keys (left at their random init): {info['missing_keys'][:8]}")
    return model.eval()


# ------------------------------------------------------------------------------------------ main

def random_tokens(n, vocab, seed):
    r = np.random.default_rng(seed)
    return [0] + [int(x) for x in r.integers(2, vocab, n - 1)]


def side_by_side(name, model_dir, args, out, log):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    V = cfg["vocab_size"]
    res = {"model": name, "dir": model_dir, "config": {k: cfg[k] for k in (
        "hidden_size", "num_hidden_layers", "n_routed_experts", "num_experts_per_tok", "vocab_size")}}
    speed = (random_tokens(args.prompt + args.decode, V, 5), args.prompt)
    seqs = [speed]
    gold = []
    exp_path = os.path.join(model_dir, "expected.safetensors")
    if os.path.exists(exp_path):  # the fixture: its 7 cases too
        exp = ckpt.read_safetensors(exp_path)
        for k in range(7):
            toks = [int(x) for x in exp[f"case{k}.tokens"][2]]
            seqs.append((toks, int(exp[f"case{k}.prefill_len"][2][0])))
            gold.append(np.array(ckpt.decode(exp[f"case{k}.logits"])))
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        eng, info = run_engine(args.engine, model_dir, seqs, args.reps, work)
        res["engine"] = {"timing": info["seqs"][0], "load_s": info["load_s"], "engine_new_s": info["engine_new_s"],
                         "wall_s": time.perf_counter() - t0,
                         "deterministic": all(s["deterministic"] for s in info["seqs"])}
    if gold:
        res["engine_vs_golden"] = agreement(np.concatenate(gold), np.concatenate(eng[1:]))
    tensors = read_official(model_dir)
    dev = "cuda"
    makers = {"converted": lambda: hf_converted(cfg, tensors, dev, log),
              "dequantized": lambda: hf_dequantized(model_dir, dev, log),
              "unchanged": lambda: hf_unchanged(model_dir, dev, log)}
    variants = (["unchanged"] if name in args.unchanged else []) + ["dequantized", "converted"]
    for vname in variants:
        try:
            model = makers[vname]()
        except Exception as ex:  # noqa: BLE001 (recorded: the report says why)
            res[f"hf_{vname}"] = {"error": f"{type(ex).__name__}: {str(ex)[:1500]}"}
            log.append(f"{name} {vname}: {traceback.format_exc()[-3000:]}")
            continue
        try:
            run_hf(model, speed[0][:64], 48, dev)  # warm-up (kernel selection, allocator)
            pt, dt = [], []
            for _ in range(args.reps):
                lg, p, steps = run_hf(model, speed[0], speed[1], dev)
                pt.append(p)
                dt += steps
            r = {"prefill_s": float(np.median(pt)), "decode_s": float(np.median(dt)), "reps": args.reps,
                 "vs_engine": agreement(eng[0], lg)}
            hf_rows = [lg]
            for toks, P in seqs[1:]:
                hf_rows.append(run_hf(model, toks, P, dev)[0])
            if gold:
                r["vs_golden"] = agreement(np.concatenate(gold), np.concatenate(hf_rows[1:]))
                r["vs_engine_cases"] = agreement(np.concatenate(eng[1:]), np.concatenate(hf_rows[1:]))
            res[f"hf_{vname}"] = r
        except Exception as ex:  # noqa: BLE001
            res[f"hf_{vname}"] = {"error": f"{type(ex).__name__}: {str(ex)[:1500]}"}
            log.append(f"{name} {vname} run: {traceback.format_exc()[-3000:]}")
        del model
        torch.cuda.empty_cache()
    return res


VARIANTS = ("unchanged", "dequantized", "converted")


def report(results, args):
    P, T = args.prompt, args.decode
    lines = [f"Speed: prefill of {P} tokens, then {T} teacher-forced decode steps (logits to the host each step); "
             f"medians over {args.reps} runs, one GPU, same process tree",
             "", "| model | side | prefill s | prefill tok/s | decode ms/token | decode tok/s | engine speed-up "
             "prefill | engine speed-up decode |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        e = r.get("engine", {}).get("timing")
        if not e:
            continue
        lines.append(f"| {r['model']} | CUDA engine | {e['prefill_s']:.4f} | {P / e['prefill_s']:.0f} | "
                     f"{1e3 * e['decode_s']:.2f} | {1 / e['decode_s']:.1f} | | |")
        for v in VARIANTS:
            h = r.get(f"hf_{v}")
            if h and "prefill_s" in h:
                lines.append(f"| {r['model']} | transformers eager ({v}) | {h['prefill_s']:.4f} | "
                             f"{P / h['prefill_s']:.0f} | {1e3 * h['decode_s']:.2f} | {1 / h['decode_s']:.1f} | "
                             f"{h['prefill_s'] / e['prefill_s']:.1f}x | {h['decode_s'] / e['decode_s']:.1f}x |")
    lines += ["", "Logit agreement (sigma = std of the reference row)", "",
              "| model | compared (reference first) | rows | rms/sigma median | p90 | max | max abs/sigma median | "
              "max | Pearson r min | top-1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "engine_vs_golden" in r:
            lines.append(f"| {r['model']} | golden (reference) vs CUDA engine " + fmt_agree(r["engine_vs_golden"]))
        for v in VARIANTS:
            h = r.get(f"hf_{v}")
            if not h or "error" in h:
                continue
            if "vs_golden" in h:
                lines.append(f"| {r['model']} | golden (reference) vs transformers ({v}) " + fmt_agree(h["vs_golden"]))
                lines.append(f"| {r['model']} | CUDA engine vs transformers ({v}), fixture cases "
                             + fmt_agree(h["vs_engine_cases"]))
            lines.append(f"| {r['model']} | CUDA engine vs transformers ({v}), speed run " + fmt_agree(h["vs_engine"]))
    for r in results:
        for v in VARIANTS:
            h = r.get(f"hf_{v}")
            if h and "error" in h:
                lines.append(f"\n{r['model']}, transformers {v}: {h['error']}")
        if "error" in r:
            lines.append(f"\n{r['model']}: {r['error']}")
    return "\n".join(lines)


def selftest():
    """CPU check of the conversion against ckpt.py's numpy decoders on the tiny fixture (no transformers)."""
    d = os.path.join(ROOT, "tests", "fixtures", "v4-tiny-a")
    cfg = json.load(open(os.path.join(d, "config.json")))
    t = read_official(d)
    sd = hf_state_dict(t, cfg, "cpu", torch.float32)
    n = 0
    for pat, rep in NAME_MAP:
        for name in t:
            key = name[:-len(".weight")] if t[name][0] in ("F8_E4M3",) else name
            if name.startswith("mtp.") or not re.fullmatch(pat, key):
                continue
            want = ckpt.decode(t[name], t.get(key + ".scale")) if t[name][0] == "F8_E4M3" else ckpt.decode(t[name])
            got = sd[re.sub(pat, rep, key)].float().numpy() if t[name][0] != "I64" else sd[re.sub(pat, rep, key)].numpy()
            assert got.shape == np.shape(want) and np.array_equal(got, want), name
            n += 1
    E, inter, H = cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["hidden_size"]
    for layer in range(cfg["num_hidden_layers"]):
        gu, dn = sd[f"model.layers.{layer}.mlp.experts.gate_up_proj"], sd[f"model.layers.{layer}.mlp.experts.down_proj"]
        assert tuple(gu.shape) == (E, 2 * inter, H) and tuple(dn.shape) == (E, H, inter)
        for e in range(E):
            p = f"layers.{layer}.ffn.experts.{e}."
            w = {k: ckpt.decode(t[p + f"w{k}.weight"], t[p + f"w{k}.scale"]) for k in (1, 2, 3)}
            assert np.array_equal(gu[e, :inter].numpy(), w[1]) and np.array_equal(gu[e, inter:].numpy(), w[3])
            assert np.array_equal(dn[e].numpy(), w[2])
            n += 3
    # bf16 is exact for every dequantised weight (e4m3/e2m1 x power of two)
    sd16 = hf_state_dict(t, cfg, "cpu", torch.bfloat16)
    bad = [k for k in sd if sd[k].is_floating_point() and not torch.equal(sd16[k].float(), sd[k].float())]
    assert not bad, f"not exact in bf16: {bad[:4]}"
    mtp = sum(1 for k in t if k.startswith("mtp."))
    print(f"selftest: {len(sd)} HF tensors from {len(t) - mtp} official tensors ({mtp} mtp.* dropped); "
          f"{n} checked bit-exact against ckpt.decode; bf16 exact")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", help="bench-gpu-restore binary")
    ap.add_argument("--model", action="append", default=[], help="NAME=DIR (official checkpoint)")
    ap.add_argument("--out", default=".")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--unchanged", default="tiny", help="models (comma list) also tried with from_pretrained as is")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return 0
    if not args.engine or not args.model:
        ap.error("--engine and --model are required")
    args.unchanged = set(filter(None, args.unchanged.split(",")))
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    results, log = [], []
    for spec in args.model:
        name, d = spec.split("=", 1)
        try:
            results.append(side_by_side(name, d, args, args.out, log))
        except Exception as ex:  # noqa: BLE001
            results.append({"model": name, "error": f"{type(ex).__name__}: {str(ex)[:1500]}"})
            log.append(f"{name}: {traceback.format_exc()[-3000:]}")
        with open(os.path.join(args.out, "side_by_side.json"), "w") as f:
            json.dump({"results": results, "log": log}, f, indent=1)
        print(report(results, args) + "\n", flush=True)  # the last one printed is complete
    print("\n".join(log))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
