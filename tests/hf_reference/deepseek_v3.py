#!/usr/bin/env python3
"""A float64 NumPy reference of Hugging Face transformers' DeepseekV3ForCausalLM forward pass.

Written from transformers' modeling_deepseek_v3.py / modeling_rope_utils.py /
configuration_deepseek_v3.py semantics (4.x and 5.x), independently of moongrad, so that
tests/hf_interop_test.ts can check moongrad against "HF's math" in both directions:

  python3 deepseek_v3.py logits DIR IDS [--transformers auto|4|5]
      Reads DIR/config.json and DIR's safetensors (model.safetensors, or the shards of
      model.safetensors.index.json; F32 / F16 / BF16 / F64) and prints one JSON object:
      {"logits": [B][T][V] float64, "info": {...}} for IDS (a JSON [[id, ...], ...] or a file).
  python3 deepseek_v3.py rope CONFIG [--transformers auto|4|5]
      The rotary tables of a config.json (JSON text or a file), no weights needed:
      {"inv_freq", "attention_factor" (cos/sin), "softmax_scale", "rope", "transformers"}.
  python3 deepseek_v3.py write DIR CONFIG SEED [--shards N] [--dtype bf16|f16|f32]
      Writes an HF-style directory: CONFIG (JSON text or a file) verbatim as config.json, and
      random weights under HF's tensor names (N shards + model.safetensors.index.json when
      N > 1). e_score_correction_bias is always stored F32, as in DeepSeek's own checkpoints.

Only NumPy is needed (no torch, no transformers, no safetensors package).

What it computes (every array float64):
- RMSNorm: w * x / sqrt(mean(x^2) + eps); the MLA inner norms (q_a_layernorm, kv_a_layernorm)
  use eps 1e-6 (DeepseekV3RMSNorm's default), the layer norms rms_norm_eps.
- MLA: q = q_b_proj(q_a_layernorm(q_a_proj x)) or q_proj x, per head [q_nope | q_rope];
  kv_a_proj_with_mqa x = [c | k_rope]; kv_b_proj(kv_a_layernorm c) per head [k_nope | v];
  RoPE on q_rope and the single shared k_rope: rope_interleave true = HF's
  apply_rotary_pos_emb_interleave (de-interleave (x0,x1),(x2,x3).. into [x0,x2,..|x1,x3,..],
  then rotate_half), false = apply_rotary_pos_emb (rotate_half); cos/sin = cos/sin(pos *
  inv_freq) * attention_factor; causal softmax with scale qk_head_dim^-0.5, times
  yarn_get_mscale(factor, mscale_all_dim)^2 when the rotary type is not default and
  mscale_all_dim is non-zero; biases (attention_bias) on q_a_proj, kv_a_proj_with_mqa and
  o_proj only.
- RoPE: default inv_freq = 1 / theta^(2i/d), d = qk_rope_head_dim; YaRN as
  _compute_yarn_parameters (correction range from beta_fast/beta_slow at
  original_max_position_embeddings, floor/ceil unless truncate is false, clamped to [0, d-1];
  linear ramp over d/2 with +0.001 when min == max; blend of theta^(-2i/d) and that / factor;
  attention_factor = explicit, else get_mscale(f, mscale)/get_mscale(f, mscale_all_dim) when
  both are non-zero, else get_mscale(f)).
- MoE: s = sigmoid(x gate^T); choice = s + e_score_correction_bias; group score = sum of the
  top-2 choices in each of n_group groups; the topk_group best groups are kept, the others'
  choices replaced by 0.0 (HF's masked_fill); top-k of the choices; weights = s at those
  experts (not the biased choices), / (sum + 1e-20) when norm_topk_prob, * routed_scaling_factor;
  y = sum_k w_k SwiGLU_k(x) + shared_experts(x) (width moe_intermediate_size * n_shared_experts).
- Layers < first_k_dense_replace use the dense SwiGLU MLP (intermediate_size).
- Final norm, lm_head (embed_tokens' matrix when tie_word_embeddings).

Config reading (--transformers):
- 4: rope_theta (default 10000) + rope_scaling (null or a dict whose rope_type / type names
  the method); rope_parameters is ignored. YaRN's frequencies and attention factor use
  factor = max_position_embeddings / original_max_position_embeddings when the dict has
  original_max_position_embeddings (else rope_scaling.factor, and max_position_embeddings as
  the original length); the softmax mscale uses rope_scaling.factor.
- 5: rope_parameters = rope_scaling if truthy else rope_parameters (else {}); rope_theta
  inside it wins, else the top-level rope_theta, else 10000; rope_type from rope_type / type
  (default "default"); YaRN's original_max_position_embeddings defaults to
  max_position_embeddings; factor from the dict everywhere.
- auto (default): 5 when the file has rope_parameters and no truthy rope_scaling, else 4.
Absent architecture keys take DeepseekV3Config's defaults.
"""

import json
import math
import os
import struct
import sys

try:
    import numpy as np
except ImportError:  # pragma: no cover - reported to the caller
    sys.stderr.write("deepseek_v3.py: NumPy is required (pip install numpy)\n")
    sys.exit(3)

# DeepseekV3Config.__init__ defaults (transformers 4.x and 5.x agree on these).
HF_DEFAULTS = {
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_interleave": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
}

INNER_NORM_EPS = 1e-6  # DeepseekV3RMSNorm(q_lora_rank) / (kv_lora_rank): the default eps


class Fail(Exception):
    """An error the CLI reports as one line on stderr (exit code 2)."""


# ----------------------------------------------------------------------------------------------
# safetensors, by hand: u64 little-endian header length, JSON header, raw little-endian data.

def _bf16_to_f32(raw):
    u16 = np.frombuffer(raw, dtype="<u2")
    return (u16.astype("<u4") << np.uint32(16)).view("<f4")


def _f32_to_bf16_bits(x32):
    """Round-to-nearest-even f32 -> bf16 bit patterns (finite inputs)."""
    u = np.ascontiguousarray(x32, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype("<u2")


_READ = {
    "F64": lambda raw: np.frombuffer(raw, dtype="<f8"),
    "F32": lambda raw: np.frombuffer(raw, dtype="<f4"),
    "F16": lambda raw: np.frombuffer(raw, dtype="<f2"),
    "BF16": _bf16_to_f32,
    "I64": lambda raw: np.frombuffer(raw, dtype="<i8"),
    "I32": lambda raw: np.frombuffer(raw, dtype="<i4"),
}
_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}


def read_safetensors(path):
    """name -> (float64 array, stored dtype string) for every tensor of one file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise Fail(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise Fail(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in _READ:
            raise Fail(f"{path}: {name} has dtype {dt} (reads F64, F32, F16, BF16, I64, I32)")
        count = int(np.prod(shape)) if shape else 1
        if end - start != count * _SIZE[dt] or base + end > len(data):
            raise Fail(f"{path}: {name} {dt}{shape} does not match data_offsets {start}..{end}")
        arr = _READ[dt](data[base + start : base + end]).astype(np.float64).reshape(shape)
        out[name] = (arr, dt)
    return out


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, float64 array, dtype in F32/F16/BF16/F64), written in order."""
    header = {}
    blobs = []
    offset = 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr, dt in tensors:
        a = np.asarray(arr)
        if dt == "BF16":
            raw = _f32_to_bf16_bits(a.astype(np.float32)).tobytes()
        elif dt == "F16":
            raw = a.astype("<f2").tobytes()
        elif dt == "F32":
            raw = a.astype("<f4").tobytes()
        elif dt == "F64":
            raw = a.astype("<f8").tobytes()
        else:
            raise Fail(f"cannot write dtype {dt}")
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # the data starts 8-byte aligned, as safetensors does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)


def load_weights(d):
    """Every tensor of a model directory as float64 (shards via model.safetensors.index.json)."""
    index = os.path.join(d, "model.safetensors.index.json")
    weights, dtypes = {}, {}
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        files = {}
        for name, file in wm.items():
            files.setdefault(file, set()).add(name)
        for file, names in sorted(files.items()):
            t = read_safetensors(os.path.join(d, file))
            missing = names - set(t)
            if missing:
                raise Fail(f"{file} lacks {sorted(missing)[0]} (listed in the index)")
            for name in names:
                weights[name], dtypes[name] = t[name]
    else:
        single = os.path.join(d, "model.safetensors")
        if not os.path.exists(single):
            raise Fail(f"{d} holds neither model.safetensors nor model.safetensors.index.json")
        for name, (arr, dt) in read_safetensors(single).items():
            weights[name], dtypes[name] = arr, dt
    return weights, dtypes


# ----------------------------------------------------------------------------------------------
# config.json with transformers' semantics

def read_config(raw, version="auto"):
    """A resolved config dict: HF defaults filled, rotary parameters resolved as 4.x or 5.x."""
    if version == "auto":
        has5 = isinstance(raw.get("rope_parameters"), dict) and not raw.get("rope_scaling")
        version = "5" if has5 else "4"
    cfg = dict(HF_DEFAULTS)
    for k in HF_DEFAULTS:
        if k in raw:
            cfg[k] = raw[k]
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    cfg["qk_head_dim"] = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    cfg["transformers"] = version
    cfg["rope"] = resolve_rope(raw, cfg, version)
    return cfg


def resolve_rope(raw, cfg, version):
    """{"type", "theta", and for yarn: factor, freq_factor, original, beta_fast, beta_slow,
    mscale, mscale_all_dim, attention_factor, truncate, softmax_factor}."""
    max_pos = cfg["max_position_embeddings"]
    if version == "4":
        theta = raw.get("rope_theta", 10000.0)
        d = raw.get("rope_scaling")
        if not d:
            return {"type": "default", "theta": float(theta)}
        rtype = d.get("rope_type", d.get("type"))
        factor = d["factor"]
        if "original_max_position_embeddings" in d:
            original = d["original_max_position_embeddings"]
            freq_factor = max_pos / original  # 4.x: the ratio replaces factor for the frequencies
        else:
            original, freq_factor = max_pos, factor
        softmax_factor = factor  # DeepseekV3Attention reads rope_scaling["factor"]
    elif version == "5":
        d = dict(raw.get("rope_scaling") or raw.get("rope_parameters") or {})
        d.setdefault("rope_theta", raw.get("rope_theta", 10000.0))
        theta = d["rope_theta"]
        rtype = d.get("rope_type", d.get("type", "default"))
        if rtype == "default":
            return {"type": "default", "theta": float(theta)}
        original = d.get("original_max_position_embeddings", max_pos)
        factor = d.get("factor")
        if factor is None:
            factor = max_pos / original
        freq_factor = softmax_factor = factor
    else:
        raise Fail(f"--transformers must be 4, 5 or auto, got {version}")
    if rtype == "default":
        return {"type": "default", "theta": float(theta)}
    if rtype != "yarn":
        raise Fail(f"rope type {rtype!r} is not implemented by this reference (default, yarn)")

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    mscale, mscale_all_dim = d.get("mscale"), d.get("mscale_all_dim")
    attention_factor = d.get("attention_factor")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(freq_factor, mscale) / get_mscale(freq_factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(freq_factor)
    # DeepseekV3Attention: scaling *= mscale^2 with mscale = yarn_get_mscale(factor, mscale_all_dim)
    # when mscale_all_dim is truthy (rope_scaling / a non-default rope_parameters).
    msa = d.get("mscale_all_dim", 0)
    softmax_mult = get_mscale(softmax_factor, msa) ** 2 if msa else 1.0
    return {
        "type": "yarn",
        "theta": float(theta),
        "factor": float(freq_factor),
        "original": original,
        "beta_fast": d.get("beta_fast") or 32,
        "beta_slow": d.get("beta_slow") or 1,
        "truncate": d.get("truncate", True),
        "attention_factor": float(attention_factor),
        "softmax_mult": float(softmax_mult),
    }


def rope_tables(rope, dim):
    """(inv_freq [dim/2], attention_factor) as _compute_{default,yarn}_rope_parameters."""
    theta = rope["theta"]
    pos_freqs = theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if rope["type"] == "default":
        return 1.0 / pos_freqs, 1.0
    factor = rope["factor"]

    def correction_dim(rot):
        return dim * math.log(rope["original"] / (rot * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(rope["beta_fast"]), correction_dim(rope["beta_slow"])
    if rope["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation_factor = 1.0 - ramp
    inv_extra = 1.0 / pos_freqs
    inv_inter = 1.0 / (factor * pos_freqs)
    inv_freq = inv_inter * (1 - extrapolation_factor) + inv_extra * extrapolation_factor
    return inv_freq, rope["attention_factor"]


# ----------------------------------------------------------------------------------------------
# the forward pass

def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def linear(x, W, name):
    y = x @ W[name + ".weight"].T
    b = W.get(name + ".bias")
    return y if b is None else y + b


def silu(x):
    return x / (1.0 + np.exp(-x))


def swiglu(x, W, prefix):
    return linear(silu(linear(x, W, prefix + ".gate_proj")) * linear(x, W, prefix + ".up_proj"), W, prefix + ".down_proj")


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x, cos, sin, interleave):
    """x [..., T, d]; cos/sin [T, d] (already times attention_factor)."""
    if interleave:
        d = x.shape[-1]
        x = x.reshape(*x.shape[:-1], d // 2, 2).swapaxes(-1, -2).reshape(x.shape)
    return x * cos + rotate_half(x) * sin


def attention(x, W, p, cfg, cos, sin, scale):
    """x [B, T, D] -> [B, T, D] (DeepseekV3Attention, causal, no cache)."""
    B, T, _ = x.shape
    H = cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    rkv = cfg["kv_lora_rank"]
    if cfg["q_lora_rank"] is None:
        q = linear(x, W, p + ".q_proj")
    else:
        qa = linear(x, W, p + ".q_a_proj")
        q = linear(rms_norm(qa, W[p + ".q_a_layernorm.weight"], INNER_NORM_EPS), W, p + ".q_b_proj")
    q = q.reshape(B, T, H, dn + dr).transpose(0, 2, 1, 3)  # [B, H, T, dqk]
    q_nope, q_rope = q[..., :dn], q[..., dn:]
    ckv = linear(x, W, p + ".kv_a_proj_with_mqa")
    c, k_rope = ckv[..., :rkv], ckv[..., rkv:]
    kv = linear(rms_norm(c, W[p + ".kv_a_layernorm.weight"], INNER_NORM_EPS), W, p + ".kv_b_proj")
    kv = kv.reshape(B, T, H, dn + dv).transpose(0, 2, 1, 3)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    k_rope = k_rope.reshape(B, 1, T, dr)
    q_rope = apply_rope(q_rope, cos, sin, cfg["rope_interleave"])
    k_rope = apply_rope(k_rope, cos, sin, cfg["rope_interleave"])
    k_rope = np.broadcast_to(k_rope, (B, H, T, dr))
    qs = np.concatenate([q_nope, q_rope], axis=-1)
    ks = np.concatenate([k_nope, k_rope], axis=-1)
    logits = (qs @ ks.swapaxes(-1, -2)) * scale  # [B, H, T, T]
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    logits = np.where(mask, -np.inf, logits)
    logits = logits - logits.max(axis=-1, keepdims=True)
    prob = np.exp(logits)
    prob = prob / prob.sum(axis=-1, keepdims=True)
    out = (prob @ v).transpose(0, 2, 1, 3).reshape(B, T, H * dv)
    return linear(out, W, p + ".o_proj")


def moe(x, W, p, cfg, stats):
    """x [N, D] -> [N, D] (DeepseekV3MoE), recording the routing margins in stats."""
    E, K = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
    G, TG = cfg["n_group"], cfg["topk_group"]
    s = 1.0 / (1.0 + np.exp(-(x @ W[p + ".gate.weight"].T)))  # [N, E]
    choice = s + W[p + ".gate.e_score_correction_bias"][None, :]
    grouped = choice.reshape(-1, G, E // G)
    group_scores = np.sort(grouped, axis=-1)[..., ::-1][..., :2].sum(axis=-1)  # [N, G]
    y = np.zeros_like(x)
    for n in range(x.shape[0]):
        gorder = np.argsort(-group_scores[n], kind="stable")
        keep = np.zeros(G, dtype=bool)
        keep[gorder[:TG]] = True
        if TG < G:
            gs = group_scores[n][gorder]
            stats["group_margin"] = min(stats["group_margin"], gs[TG - 1] - gs[TG])
        masked = np.where(np.repeat(keep, E // G), choice[n], 0.0)
        order = np.argsort(-masked, kind="stable")
        top = order[:K]
        # how often the group limit and the correction bias changed the choice (diagnostics)
        if set(np.argsort(-choice[n], kind="stable")[:K]) != set(top):
            stats["group_limited"] += 1
        if set(np.argsort(-s[n], kind="stable")[:K]) != set(np.argsort(-choice[n], kind="stable")[:K]):
            stats["bias_changed"] += 1
        if K < E:
            stats["expert_margin"] = min(stats["expert_margin"], masked[order[K - 1]] - masked[order[K]])
        w = s[n, top]
        if cfg["norm_topk_prob"]:
            w = w / (w.sum() + 1e-20)
        w = w * cfg["routed_scaling_factor"]
        for e, we in zip(top, w):
            y[n] += we * swiglu(x[n], W, f"{p}.experts.{e}")
    if cfg["n_shared_experts"] > 0:
        y = y + swiglu(x, W, p + ".shared_experts")
    return y


def rope_and_scale(cfg):
    """(inv_freq, cos/sin attention factor, softmax scale) of a resolved config."""
    inv_freq, attention_factor = rope_tables(cfg["rope"], cfg["qk_rope_head_dim"])
    scale = cfg["qk_head_dim"] ** -0.5
    if cfg["rope"]["type"] != "default":
        scale *= cfg["rope"]["softmax_mult"]
    return inv_freq, attention_factor, scale


def rope_info(cfg):
    inv_freq, attention_factor, scale = rope_and_scale(cfg)
    return {
        "transformers": cfg["transformers"],
        "rope": cfg["rope"],
        "inv_freq": inv_freq.tolist(),
        "attention_factor": attention_factor,
        "softmax_scale": scale,
    }


def forward(cfg, W, ids):
    """ids [B, T] (ints) -> (logits [B, T, V] float64, info)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise Fail(f"ids must be [batch][seq], got shape {list(ids.shape)}")
    V = cfg["vocab_size"]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise Fail(f"ids must lie in [0, {V})")
    B, T = ids.shape
    inv_freq, attention_factor, scale = rope_and_scale(cfg)
    freqs = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb) * attention_factor, np.sin(emb) * attention_factor
    stats = {"group_margin": math.inf, "expert_margin": math.inf, "group_limited": 0, "bias_changed": 0}
    h = W["model.embed_tokens.weight"][ids]
    eps = cfg["rms_norm_eps"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = attention(rms_norm(h, W[p + ".input_layernorm.weight"], eps), W, p + ".self_attn", cfg, cos, sin, scale)
        h = h + a
        n2 = rms_norm(h, W[p + ".post_attention_layernorm.weight"], eps)
        if i < cfg["first_k_dense_replace"]:
            m = swiglu(n2, W, p + ".mlp")
        else:
            m = moe(n2.reshape(B * T, -1), W, p + ".mlp", cfg, stats).reshape(n2.shape)
        h = h + m
    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    logits = h @ head.T
    info = {
        **rope_info(cfg),
        "min_group_margin": None if math.isinf(stats["group_margin"]) else stats["group_margin"],
        "min_expert_margin": None if math.isinf(stats["expert_margin"]) else stats["expert_margin"],
        "routed_tokens_group_limited": stats["group_limited"],
        "routed_tokens_bias_changed": stats["bias_changed"],
    }
    return logits, info


# ----------------------------------------------------------------------------------------------
# an HF-style directory with random weights

def parameter_shapes(cfg):
    """(name, shape, kind) in HF's module order; kind: linear (fan-in std), norm, bias, embed, router_bias."""
    D, V = cfg["hidden_size"], cfg["vocab_size"]
    H = cfg["num_attention_heads"]
    dqk, dr = cfg["qk_head_dim"], cfg["qk_rope_head_dim"]
    dn, dv, rkv, rq = cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"], cfg["q_lora_rank"]
    out = [("model.embed_tokens.weight", (V, D), "embed")]

    def mlp(prefix, width):
        out.extend([
            (prefix + ".gate_proj.weight", (width, D), "linear"),
            (prefix + ".up_proj.weight", (width, D), "linear"),
            (prefix + ".down_proj.weight", (D, width), "linear"),
        ])

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = p + ".self_attn"
        if rq is None:
            out.append((a + ".q_proj.weight", (H * dqk, D), "linear"))
        else:
            out.append((a + ".q_a_proj.weight", (rq, D), "linear"))
            if cfg["attention_bias"]:
                out.append((a + ".q_a_proj.bias", (rq,), "bias"))
            out.append((a + ".q_a_layernorm.weight", (rq,), "norm"))
            out.append((a + ".q_b_proj.weight", (H * dqk, rq), "linear"))
        out.append((a + ".kv_a_proj_with_mqa.weight", (rkv + dr, D), "linear"))
        if cfg["attention_bias"]:
            out.append((a + ".kv_a_proj_with_mqa.bias", (rkv + dr,), "bias"))
        out.append((a + ".kv_a_layernorm.weight", (rkv,), "norm"))
        out.append((a + ".kv_b_proj.weight", (H * (dn + dv), rkv), "linear"))
        out.append((a + ".o_proj.weight", (D, H * dv), "linear"))
        if cfg["attention_bias"]:
            out.append((a + ".o_proj.bias", (D,), "bias"))
        if i < cfg["first_k_dense_replace"]:
            mlp(p + ".mlp", cfg["intermediate_size"])
        else:
            E = cfg["n_routed_experts"]
            out.append((p + ".mlp.gate.weight", (E, D), "linear"))
            out.append((p + ".mlp.gate.e_score_correction_bias", (E,), "router_bias"))
            for e in range(E):
                mlp(f"{p}.mlp.experts.{e}", cfg["moe_intermediate_size"])
            if cfg["n_shared_experts"] > 0:
                mlp(p + ".mlp.shared_experts", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        out.append((p + ".input_layernorm.weight", (D,), "norm"))
        out.append((p + ".post_attention_layernorm.weight", (D,), "norm"))
    out.append(("model.norm.weight", (D,), "norm"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, D), "linear"))
    return out


def random_weights(cfg, seed):
    """Weights that keep every activation O(1): linears N(0, 1/fan_in), embeddings N(0, 1),
    norm gains 1 + N(0, 0.1^2), biases N(0, 0.1^2), router biases N(0, 0.05^2) (small enough that
    every kept group holds top_k positive choices, so HF's 0.0 fill of masked groups never wins)."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, kind in parameter_shapes(cfg):
        if kind == "linear":
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        elif kind == "embed":
            a = rng.standard_normal(shape)
        elif kind == "norm":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif kind == "bias":
            a = 0.1 * rng.standard_normal(shape)
        else:
            a = 0.05 * rng.standard_normal(shape)
        out.append((name, a, kind))
    return out


def write_dir(d, config_text, seed, shards=1, dtype="bf16"):
    raw = json.loads(config_text)
    cfg = read_config(raw)
    st = {"bf16": "BF16", "f16": "F16", "f32": "F32"}.get(dtype)
    if st is None:
        raise Fail(f"--dtype must be bf16, f16 or f32, got {dtype}")
    if shards < 1:
        raise Fail(f"--shards must be >= 1, got {shards}")
    os.makedirs(d, exist_ok=True)
    tensors = [(n, a, "F32" if kind == "router_bias" else st) for n, a, kind in random_weights(cfg, seed)]
    if shards > len(tensors):
        raise Fail(f"--shards {shards} exceeds the {len(tensors)} tensors")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(config_text if config_text.endswith("\n") else config_text + "\n")
    meta = {"format": "pt"}
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, meta)
        return
    per = -(-len(tensors) // shards)
    weight_map, total = {}, 0
    for k in range(shards):
        part = tensors[k * per : (k + 1) * per]
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(d, file), part, meta)
        for n, a, dt in part:
            weight_map[n] = file
            total += a.size * {"BF16": 2, "F16": 2, "F32": 4}[dt]
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# CLI

def _json_arg(text):
    t = text.lstrip()
    if t.startswith("{") or t.startswith("["):
        return text
    with open(text) as f:
        return f.read()


def _opt(args, name, default):
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            raise Fail(f"{name} needs a value")
        v = args[i + 1]
        del args[i : i + 2]
        return v
    return default


USAGE = (
    "usage: deepseek_v3.py logits DIR IDS_JSON [--transformers auto|4|5]\n"
    "       deepseek_v3.py rope CONFIG_JSON [--transformers auto|4|5]\n"
    "       deepseek_v3.py write DIR CONFIG_JSON SEED [--shards N] [--dtype bf16|f16|f32]\n"
)


def main(argv):
    args = list(argv)
    if not args or args[0] not in ("logits", "rope", "write"):
        sys.stderr.write(USAGE)
        return 2
    cmd = args.pop(0)
    if cmd == "rope":
        version = _opt(args, "--transformers", "auto")
        if len(args) != 1:
            sys.stderr.write(USAGE)
            return 2
        cfg = read_config(json.loads(_json_arg(args[0])), version)
        sys.stdout.write(json.dumps(rope_info(cfg)) + "\n")
        return 0
    if cmd == "logits":
        version = _opt(args, "--transformers", "auto")
        if len(args) != 2:
            sys.stderr.write(USAGE)
            return 2
        d, ids_text = args
        with open(os.path.join(d, "config.json")) as f:
            cfg = read_config(json.load(f), version)
        W, _ = load_weights(d)
        logits, info = forward(cfg, W, json.loads(_json_arg(ids_text)))
        sys.stdout.write(json.dumps({"logits": logits.tolist(), "info": info}))
        sys.stdout.write("\n")
        return 0
    shards = int(_opt(args, "--shards", "1"))
    dtype = _opt(args, "--dtype", "bf16")
    if len(args) != 3:
        sys.stderr.write(USAGE)
        return 2
    d, config_text, seed = args
    write_dir(d, _json_arg(config_text), int(seed), shards, dtype)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Fail as e:
        sys.stderr.write(f"deepseek_v3.py: {e}\n")
        sys.exit(2)
