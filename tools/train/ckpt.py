"""The official DeepSeek V4 checkpoint format (spec §3): safetensors read/write with the storage dtypes
(F8_E4M3 + F8_E8M0 128x128 tiles, I8-packed E2M1 + per-32 E8M0, BF16, F32, I64), the official tensor
names, and the mapping to model.Transformer. Pure numpy + torch (no safetensors package, no float8
dtypes), so it runs on torch 1.13 and 2.x alike."""
import json
import os
import struct

import numpy as np
import torch

import model as M

# ----------------------------------------------------------------------------- raw safetensors

_NP = {"F32": np.float32, "I64": np.int64, "I8": np.uint8, "BF16": np.uint16, "F8_E4M3": np.uint8,
       "F8_E8M0": np.uint8, "I32": np.int32}


def read_safetensors(path):
    """-> {name: (dtype string, shape, numpy array of the raw storage type)}"""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        arr = np.frombuffer(buf, dtype=_NP[t["dtype"]], count=(b - a) // np.dtype(_NP[t["dtype"]]).itemsize,
                            offset=base + a)
        out[name] = (t["dtype"], t["shape"], arr.reshape(t["shape"]) if t["shape"] else arr)
    return out


def write_safetensors(path, tensors):
    """tensors: {name: (dtype string, numpy array in storage type)}; written atomically, names sorted."""
    hdr, off, blobs = {}, 0, []
    for name in sorted(tensors):
        dt, arr = tensors[name]
        b = np.ascontiguousarray(arr).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return 8 + len(h) + off


# ----------------------------------------------------------------------------- decoders

def _e4m3_table():
    t = np.zeros(256, np.float32)
    for b in range(256):
        s, e, m = b >> 7, (b >> 3) & 15, b & 7
        v = m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        if e == 15 and m == 7:
            v = np.nan
        t[b] = -v if s else v
    return t


E4M3 = _e4m3_table()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def e8m0(arr):
    return np.ldexp(np.float32(1.0), arr.astype(np.int32) - 127).astype(np.float32)


def bf16_to_f32(arr):
    return (arr.astype(np.uint32) << 16).view(np.float32)


def decode(t, scale=None):
    """Storage -> float32 numpy (weights dequantised with their scale)."""
    dt, shape, arr = t
    if dt == "F32":
        return arr.astype(np.float32)
    if dt == "BF16":
        return bf16_to_f32(arr)
    if dt == "I64" or dt == "I32":
        return arr
    if dt == "F8_E4M3":
        v = E4M3[arr]
        s = e8m0(scale[2])
        o, i = v.shape
        return v * np.repeat(np.repeat(s, 128, 0), 128, 1)[:o, :i]
    if dt == "I8":
        lo, hi = E2M1[arr & 15], E2M1[arr >> 4]
        v = np.stack([lo, hi], -1).reshape(arr.shape[0], arr.shape[1] * 2)
        return v * np.repeat(e8m0(scale[2]), 32, 1)
    raise ValueError(f"unknown dtype {dt}")


# ----------------------------------------------------------------------------- encoders

def enc_bf16(x):
    return x.detach().float().cpu().to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def enc_e8m0(s):
    _, E = torch.frexp(s.float().cpu())
    return (E - 1 + 127).to(torch.int32).numpy().astype(np.uint8)


def enc_e4m3(q):
    """Exact E4M3 values (float tensor) -> bytes."""
    q = q.float().cpu()
    a = q.abs()
    _, E = torch.frexp(a)
    e = E - 1
    normal = a >= 2.0 ** -6
    expf = torch.where(normal, e + 7, torch.zeros_like(e))
    mant = torch.where(normal, torch.round((torch.ldexp(a, -e) - 1) * 8), torch.round(torch.ldexp(a, torch.full_like(e, 9))))
    b = ((q < 0).to(torch.int32) << 7) | (expf.to(torch.int32) << 3) | mant.to(torch.int32)
    b = torch.where(a == 0, torch.zeros_like(b), b)
    return b.numpy().astype(np.uint8)


_E2M1_CODE = torch.tensor([0, 1, 2, 3, 4, -1, 5, -1, 6, -1, -1, -1, 7])


def enc_e2m1_packed(q):
    """Exact E2M1 values [out, in] -> I8 [out, in/2], low nibble = even K index."""
    q = q.float().cpu()
    code = _E2M1_CODE[(q.abs() * 2).long()]
    assert bool((code >= 0).all())
    code = code | ((q < 0).long() << 3)
    code = torch.where(q == 0, torch.zeros_like(code), code)
    lo, hi = code[:, 0::2], code[:, 1::2]
    return (lo | (hi << 4)).to(torch.int32).numpy().astype(np.uint8)


# ----------------------------------------------------------------------------- name mapping

def inventory(model):
    """[(official name, kind, getter)] where kind is bf16 | f32 | fp8 | fp4 | i64 and getter returns the
    model tensor (fp4: one expert's [out,in] slice)."""
    cfg = model.cfg
    inv = [("embed.weight", "bf16", lambda: model.embed), ("head.weight", "bf16", lambda: model.head),
           ("norm.weight", "bf16", lambda: model.norm), ("hc_head_fn", "f32", lambda: model.hc_head_fn),
           ("hc_head_base", "f32", lambda: model.hc_head_base), ("hc_head_scale", "f32", lambda: model.hc_head_scale)]
    for i, l in enumerate(model.layers):
        p = f"layers.{i}."
        a, f = l.attn, l.ffn

        def g(obj, attr):
            return lambda: getattr(obj, attr)
        for nm in ("hc_attn_fn", "hc_attn_base", "hc_attn_scale", "hc_ffn_fn", "hc_ffn_base", "hc_ffn_scale"):
            inv.append((p + nm, "f32", g(l, nm)))
        inv += [(p + "attn_norm.weight", "bf16", g(l, "attn_norm")), (p + "ffn_norm.weight", "bf16", g(l, "ffn_norm")),
                (p + "attn.attn_sink", "f32", g(a, "attn_sink")),
                (p + "attn.wq_a", "fp8", g(a, "wq_a")), (p + "attn.q_norm.weight", "bf16", g(a, "q_norm")),
                (p + "attn.wq_b", "fp8", g(a, "wq_b")), (p + "attn.wkv", "fp8", g(a, "wkv")),
                (p + "attn.kv_norm.weight", "bf16", g(a, "kv_norm")),
                (p + "attn.wo_a", "fp8", g(a, "wo_a")), (p + "attn.wo_b", "fp8", g(a, "wo_b"))]
        if a.ratio:
            c = a.compressor
            inv += [(p + "attn.compressor.ape", "f32", g(c, "ape")),
                    (p + "attn.compressor.wkv.weight", "bf16", g(c, "wkv")),
                    (p + "attn.compressor.wgate.weight", "bf16", g(c, "wgate")),
                    (p + "attn.compressor.norm.weight", "bf16", g(c, "norm"))]
            if a.indexer is not None:
                x, xc = a.indexer, a.indexer.compressor
                inv += [(p + "attn.indexer.wq_b", "fp8", g(x, "wq_b")),
                        (p + "attn.indexer.weights_proj.weight", "bf16", g(x, "weights_proj")),
                        (p + "attn.indexer.compressor.ape", "f32", g(xc, "ape")),
                        (p + "attn.indexer.compressor.wkv.weight", "bf16", g(xc, "wkv")),
                        (p + "attn.indexer.compressor.wgate.weight", "bf16", g(xc, "wgate")),
                        (p + "attn.indexer.compressor.norm.weight", "bf16", g(xc, "norm"))]
        inv.append((p + "ffn.gate.weight", "bf16", g(f, "gate_w")))
        if f.hash:
            inv.append((p + "ffn.gate.tid2eid", "i64", g(f, "tid2eid")))
        else:
            inv.append((p + "ffn.gate.bias", "f32", g(f, "bias")))
        for e in range(cfg.n_routed_experts):
            for w in (1, 2, 3):
                inv.append((p + f"ffn.experts.{e}.w{w}", "fp4", (lambda ff, ww, ee: lambda: getattr(ff, ww)[ee])(f, f"w{w}", e)))
        inv += [(p + "ffn.shared_experts.w1", "fp8", g(f, "s1")), (p + "ffn.shared_experts.w2", "fp8", g(f, "s2")),
                (p + "ffn.shared_experts.w3", "fp8", g(f, "s3"))]
    return inv


# ----------------------------------------------------------------------------- load / export

def load(dirpath, device="cpu"):
    """Checkpoint directory (config.json + model.safetensors or an index with shards) -> Transformer with
    the decoded (dequantised) values. mtp.* tensors are ignored (this model has no MTP forward)."""
    with open(os.path.join(dirpath, "config.json")) as f:
        hf = json.load(f)
    cfg = M.Config.from_hf(hf)
    idx = os.path.join(dirpath, "model.safetensors.index.json")
    tensors = {}
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        tensors.update(read_safetensors(os.path.join(dirpath, fn)))
    model = M.Transformer(cfg)
    used = set()
    with torch.no_grad():
        for name, kind, get in inventory(model):
            if kind in ("fp8", "fp4"):
                w, s = tensors[name + ".weight"], tensors[name + ".scale"]
                used |= {name + ".weight", name + ".scale"}
                want = "F8_E4M3" if kind == "fp8" else "I8"
                assert w[0] == want, f"{name}: dtype {w[0]}, expected {want}"
                val = decode(w, s)
            else:
                t = tensors[name]
                used.add(name)
                want = {"bf16": "BF16", "f32": "F32", "i64": "I64"}[kind]
                assert t[0] == want, f"{name}: dtype {t[0]}, expected {want}"
                val = decode(t)
            dst = get()
            assert tuple(dst.shape) == tuple(val.shape), f"{name}: shape {val.shape}, model {tuple(dst.shape)}"
            dst.copy_(torch.from_numpy(np.array(val)).to(dst.dtype))
    extra = [n for n in tensors if n not in used and not n.startswith("mtp.")]
    assert not extra, f"unused tensors: {extra[:5]}"
    return model.to(device), hf


def export(model, dirpath, tokenizer=None, max_shard=15 << 20):
    """Write config.json + model.safetensors in the official format. Returns {name: bytes}."""
    os.makedirs(dirpath, exist_ok=True)
    out = {}
    with torch.no_grad():
        for name, kind, get in inventory(model):
            t = get().detach().float().cpu()
            if kind == "bf16":
                out[name] = ("BF16", enc_bf16(t))
            elif kind == "f32":
                out[name] = ("F32", t.numpy().astype(np.float32))
            elif kind == "i64":
                out[name] = ("I64", get().detach().cpu().long().numpy())
            elif kind == "fp8":
                q, s = M.quant_fp8_weight(t)
                out[name + ".weight"] = ("F8_E4M3", enc_e4m3(q))
                out[name + ".scale"] = ("F8_E8M0", enc_e8m0(s))
            elif kind == "fp4":
                q, s = M.quant_fp4_weight(t)
                out[name + ".weight"] = ("I8", enc_e2m1_packed(q))
                out[name + ".scale"] = ("F8_E8M0", enc_e8m0(s))
    for f in os.listdir(dirpath):  # no stale shards of an earlier export
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(os.path.join(dirpath, f))
    size = {k: np.asarray(v[1]).nbytes for k, v in out.items()}
    total = sum(size.values())
    if total <= max_shard:
        n = write_safetensors(os.path.join(dirpath, "model.safetensors"), out)
    else:
        # Shards of at most max_shard bytes (the device transfer takes files of up to 16 MiB), with the
        # standard index (metadata.total_size = sum of tensor bytes, weight_map name -> shard).
        shards, cur, cb = [], {}, 0
        for k in sorted(out):
            if cur and cb + size[k] > max_shard:
                shards.append(cur)
                cur, cb = {}, 0
            cur[k] = out[k]
            cb += size[k]
        shards.append(cur)
        wm, n = {}, 0
        for i, sh in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            n += write_safetensors(os.path.join(dirpath, fn), sh)
            wm.update({k: fn for k in sh})
        idx = json.dumps({"metadata": {"total_size": total}, "weight_map": wm}, indent=2) + "\n"
        with open(os.path.join(dirpath, "model.safetensors.index.json.tmp"), "w") as f:
            f.write(idx)
        os.replace(os.path.join(dirpath, "model.safetensors.index.json.tmp"),
                   os.path.join(dirpath, "model.safetensors.index.json"))
    cfgj = json.dumps(model.cfg.to_hf(), indent=2) + "\n"
    tmp = os.path.join(dirpath, "config.json.tmp")
    with open(tmp, "w") as f:
        f.write(cfgj)
    os.replace(tmp, os.path.join(dirpath, "config.json"))
    if tokenizer:
        import shutil
        shutil.copyfile(tokenizer, os.path.join(dirpath, "tokenizer.json.tmp"))
        os.replace(os.path.join(dirpath, "tokenizer.json.tmp"), os.path.join(dirpath, "tokenizer.json"))
    return n
