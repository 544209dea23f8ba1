"""PyTorch beside moongrad: one training step of the tiny Kimi-K2 / DeepSeek-V3 model
(forward + backward + optimizer step) with torch.optim.AdamW and with Muon, on the same initial
weights and batch as moongrad's bench/k2_bench.ts; on a CUDA machine also the matmul sizes of
bench/matmul_bench.ts and Newton-Schulz on 1024².

    deno run -A bench/torch_export.ts DIR        # moongrad's weights, batch and losses
    /usr/bin/python3 bench/torch_bench.py --k2-dir DIR [--json ROWS.jsonl] [--device cpu]
    python3 bench/torch_bench.py --suite all      # + matmul / Newton-Schulz (a CUDA machine)

`deno task bench:report` runs both right after bench/k2_bench.ts and merges the rows (--json:
one JSON line per row, bench/harness.ts's BenchResult fields) into k2_bench's training-step
groups, so RESULTS.md shows moongrad's and PyTorch's step side by side with the ratio.

The model is written here in plain PyTorch (no transformers package: Debian's PyTorch 1.13 has
none), with Hugging Face's module names so that moongrad's safetensors (io/safetensors.ts
writes HF names) load into it by name, and it computes what moongrad's nn/model.ts computes:
- RMSNorm w · x / sqrt(mean(x²) + eps) (the MLA inner norms q_a_layernorm / kv_a_layernorm
  with eps 1e-6, the layer norms with rms_norm_eps);
- MLA: q = q_b_proj(q_a_layernorm(q_a_proj x)) split per head into [nope | rope];
  kv_a_proj_with_mqa x = [c | k_rope]; kv_b_proj(kv_a_layernorm c) per head [k_nope | v];
  RoPE with rope_interleave (pairs (x0,x1),(x2,x3).. de-interleaved, then rotate_half) on
  q_rope and the one shared k_rope; causal softmax with scale d_qk^-0.5 (default rope);
- MoE: s = sigmoid(x gateᵀ); top-k of s + e_score_correction_bias (group-limited when
  n_group > 1); weights = s at the chosen experts, normalised, × routed_scaling_factor;
  y = Σ w_k SwiGLU_k(x) + shared_experts(x); layers < first_k_dense_replace are dense SwiGLU;
- mean next-token cross-entropy over the batch.
The check: the first loss must equal moongrad's within 1e-4, and the loss after one step of
each optimizer is compared with moongrad's after one AdamW / MuonClip step (QK-Clip with
τ = 100 does not fire on this step, so MuonClip's update is Muon + AdamW's).

Muon (PyTorch 1.13 has no torch.optim.Muon), per parameter as moongrad's optim/muon.ts:
M ← μM + G; U = G + μM (Nesterov); O = NS5(U), the quintic Newton-Schulz (3.4445, -4.775,
2.0315), 5 steps on X = U / (‖U‖_F + 1e-7), iterated on the transpose of a tall matrix;
W ← W·(1 − lr·wd) − lr·0.2·√max(A, B)·O (Moonlight's scaling). Every hidden matrix (attention
projections, MLP and expert matrices, the router) goes to Muon; embeddings, the LM head and
the norms to torch.optim.AdamW with the same lr and weight decay (Moonlight's split, as
optim/split.ts). Timing: 3 warm-up steps, then at least 5 steps and 1 s, each ending with
torch.cuda.synchronize() on CUDA. On the CPU the steps run with torch.set_num_threads(all
cores) and again with 1 thread (on a busy machine, OpenMP threads that wait on each other can
be far slower than one thread; the library label says "cpu×N").
"""

import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, min_s=1.0, min_iters=5, warmup=3):
    """Per-call ms (list): `warmup` untimed calls, then at least min_iters calls and min_s
    seconds (k2_bench.ts's training-step groups use the same 3 warm-up steps, 5 steps, 1 s)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    t0 = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - t0 < min_s:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return times


# ----------------------------------------------------------------------------------------------
# safetensors, F32 only (what moongrad writes for the tiny model), with numpy

def read_safetensors(path):
    """name -> float32 numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}; this reader takes F32")
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[8 + n + start : 8 + n + end], dtype="<f4")
        out[name] = arr.reshape(info["shape"]).copy()
    return out


# ----------------------------------------------------------------------------------------------
# the model (HF DeepseekV3 module names)

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class MLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin, interleave):
    if interleave:
        *lead, d = x.shape
        x = x.reshape(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H = c["hidden_size"], c["num_attention_heads"]
        self.H, self.dn, self.dr, self.dv = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.rkv, self.interleave = c["kv_lora_rank"], c["rope_interleave"]
        dqk = self.dn + self.dr
        self.q_a_proj = nn.Linear(D, c["q_lora_rank"], bias=False)
        self.q_a_layernorm = RMSNorm(c["q_lora_rank"], 1e-6)
        self.q_b_proj = nn.Linear(c["q_lora_rank"], H * dqk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.rkv + self.dr, bias=False)
        self.kv_a_layernorm = RMSNorm(self.rkv, 1e-6)
        self.kv_b_proj = nn.Linear(self.rkv, H * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(H * self.dv, D, bias=False)
        self.scale = dqk ** -0.5

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        H, dn, dr, dv = self.H, self.dn, self.dr, self.dv
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, H, dn + dr).transpose(1, 2)
        q_nope, q_rope = q[..., :dn], q[..., dn:]
        ckv = self.kv_a_proj_with_mqa(x)
        c, k_rope = ckv[..., : self.rkv], ckv[..., self.rkv :]
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(B, T, H, dn + dv).transpose(1, 2)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        q_rope = apply_rope(q_rope, cos, sin, self.interleave)
        k_rope = apply_rope(k_rope.view(B, 1, T, dr), cos, sin, self.interleave)
        qs = torch.cat([q_nope, q_rope], dim=-1)
        ks = torch.cat([k_nope, k_rope.expand(B, H, T, dr)], dim=-1)
        logits = (qs @ ks.transpose(-1, -2)) * self.scale
        prob = torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1)
        out = (prob @ v).transpose(1, 2).reshape(B, T, H * dv)
        return self.o_proj(out)


class Gate(nn.Module):
    def __init__(self, E, D):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(E, D))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, I = c["hidden_size"], c["moe_intermediate_size"]
        self.E, self.K = c["n_routed_experts"], c["num_experts_per_tok"]
        self.G, self.TG = c["n_group"], c["topk_group"]
        self.norm, self.scaling = c["norm_topk_prob"], c["routed_scaling_factor"]
        self.gate = Gate(self.E, D)
        self.experts = nn.ModuleList([MLP(D, I) for _ in range(self.E)])
        self.shared_experts = MLP(D, I * c["n_shared_experts"])

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        s = torch.sigmoid(x @ self.gate.weight.t())
        with torch.no_grad():
            choice = s + self.gate.e_score_correction_bias
            if self.G > 1:
                grouped = choice.view(-1, self.G, self.E // self.G)
                gscore = grouped.topk(2, dim=-1).values.sum(-1)
                keep = torch.zeros_like(gscore).scatter_(1, gscore.topk(self.TG, dim=-1).indices, 1.0)
                choice = choice.masked_fill(keep.repeat_interleave(self.E // self.G, 1) == 0, 0.0)
            idx = choice.topk(self.K, dim=-1).indices
        w = s.gather(1, idx)
        if self.norm:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * self.scaling
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            if tok.numel():
                y = y.index_add(0, tok, expert(x[tok]) * w[tok, slot, None])
        return (y + self.shared_experts(x)).view(shape)


class Layer(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        eps = c["rms_norm_eps"]
        self.input_layernorm = RMSNorm(c["hidden_size"], eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], eps)
        dense = i < c["first_k_dense_replace"]
        self.mlp = MLP(c["hidden_size"], c["intermediate_size"]) if dense else MoE(c)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c, i) for i in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class DeepseekV3(nn.Module):
    """DeepseekV3ForCausalLM's parameters and forward pass (default RoPE only)."""

    def __init__(self, c):
        super().__init__()
        rope = c.get("rope_parameters") or {"rope_type": "default", "rope_theta": c.get("rope_theta", 10000)}
        if rope.get("rope_type", "default") != "default":
            raise SystemExit(f"torch_bench.py implements default RoPE only, got {rope}")
        d = c["qk_rope_head_dim"]
        self.register_buffer(
            "inv_freq", 1.0 / rope["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d),
            persistent=False,
        )
        self.model = Inner(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        B, T = ids.shape
        freqs = torch.arange(T, dtype=torch.float64, device=ids.device)[:, None] * self.inv_freq[None]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().float(), emb.sin().float()
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=ids.device), diagonal=1)
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.model.norm(h))

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------------------------------------
# Muon

def newton_schulz5(g, steps=5, eps=1e-7):
    """Quintic Newton-Schulz orthogonalisation (Muon's coefficients), fp32."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.t()
    for _ in range(steps):
        s = x @ x.t()
        bm = b * s + c * (s @ s)
        x = a * x + bm @ x
    return x.t() if tall else x


def adamw_reason(name, p):
    """optim/split.ts's rule: None sends the parameter to Muon."""
    if p.ndim < 2:
        return "not a matrix"
    if "embed" in name:
        return "embedding"
    if "lm_head" in name:
        return "LM head"
    if name.endswith("bias"):
        return "bias"
    if any("norm" in part for part in name.split(".")):
        return "norm"
    return None


class MuonWithAdamW:
    """Muon for the hidden matrices, torch.optim.AdamW for the rest (see the module doc)."""

    def __init__(self, model, lr, weight_decay, momentum=0.95):
        named = list(model.named_parameters())
        self.muon = [p for n, p in named if adamw_reason(n, p) is None]
        self.adamw = torch.optim.AdamW(
            [p for n, p in named if adamw_reason(n, p) is not None], lr=lr, weight_decay=weight_decay
        )
        self.lr, self.wd, self.mu = lr, weight_decay, momentum
        self.buf = [torch.zeros_like(p) for p in self.muon]

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.muon, self.buf):
            g = p.grad
            m.mul_(self.mu).add_(g)
            o = newton_schulz5(g + self.mu * m)
            scale = 0.2 * math.sqrt(max(p.shape[0], p.shape[1]))
            p.mul_(1 - self.lr * self.wd).add_(o, alpha=-self.lr * scale)
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        for p in self.muon:
            p.grad = None
        self.adamw.zero_grad(set_to_none=set_to_none)


# ----------------------------------------------------------------------------------------------
# the K2 training step

def load_model(d, device):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    model = DeepseekV3(cfg)
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.to(device).train()


def k2_steps(device, d, threads):
    with open(os.path.join(d, "k2_step.json")) as f:
        spec = json.load(f)
    B, T = spec["batch"], spec["seq"]
    ids = torch.tensor(spec["xs"], dtype=torch.long, device=device).view(B, T)
    tgt = torch.tensor(spec["ys"], dtype=torch.long, device=device).view(B, T)
    rows = []
    for name, moongrad_name, make in [
        ("AdamW", "AdamW", lambda m: torch.optim.AdamW(
            m.parameters(), lr=spec["hyper"]["AdamW"]["lr"], weight_decay=spec["hyper"]["AdamW"]["weightDecay"])),
        ("Muon", "MuonClip", lambda m: MuonWithAdamW(
            m, lr=spec["hyper"]["MuonClip"]["lr"], weight_decay=spec["hyper"]["MuonClip"]["weightDecay"])),
    ]:
        model = load_model(d, device)
        opt = make(model)
        with torch.no_grad():
            loss0 = model.loss(ids, tgt).item()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = model.loss(ids, tgt)
            loss.backward()
            opt.step()

        step()  # one step from the initial weights: its loss is checked, then it is the warm-up
        with torch.no_grad():
            loss1 = model.loss(ids, tgt).item()
        times = timed(step, device)
        ms = sum(times) / len(times)
        d0 = abs(loss0 - spec["loss0"])
        d1 = abs(loss1 - spec["lossAfter"][moongrad_name])
        ok = d0 <= 1e-4 and d1 <= 1e-3
        check = (
            f"{'matches' if ok else 'MISMATCH vs'} moongrad: loss {loss0:.6f} (Δ {d0:.1e}), "
            f"after one step {loss1:.6f} (Δ {d1:.1e} vs {moongrad_name})"
        )
        rows.append({
            "file": "k2_bench",
            "group": spec["groups"][name],
            "lib": f"torch {torch.__version__} {device.type}{threads} {name}",
            "ms": ms,
            "minMs": min(times),
            "maxMs": max(times),
            "iters": len(times),
            "rate": spec["flops"] / ms / 1e6,
            "unit": "GFLOP/s",
            "vsMoongrad": None,
            "check": check,
            "work": {"flops": spec["flops"]},
        })
        print(f"  {spec['groups'][name]:<40} {rows[-1]['lib']:<28} {ms:9.1f} ms  {check}")
    return rows


# ----------------------------------------------------------------------------------------------
# matmul and Newton-Schulz (for a CUDA machine; --suite all)

def matmuls(device):
    cases = [
        ("256x256x256", (256, 256), (256, 256), False, torch.float32),
        ("512x512x512", (512, 512), (512, 512), False, torch.float32),
        ("1024x1024x1024", (1024, 1024), (1024, 1024), False, torch.float32),
        ("1024x256 @ 256x512", (1024, 256), (256, 512), False, torch.float32),
        ("8x192x320 @ (8x96x320)^T", (8, 192, 320), (8, 96, 320), True, torch.float32),
        ("256x256x256", (256, 256), (256, 256), False, torch.float16),
        ("512x512x512", (512, 512), (512, 512), False, torch.float16),
        ("4096x4096x4096", (4096, 4096), (4096, 4096), False, torch.float32),
        ("4096x4096x4096", (4096, 4096), (4096, 4096), False, torch.float16),
    ]
    for name, sa, sb, tb, dt in cases:
        g = torch.Generator(device="cpu").manual_seed(1)
        a = (torch.rand(sa, generator=g) * 2 - 1).to(device=device, dtype=dt)
        b = (torch.rand(sb, generator=g) * 2 - 1).to(device=device, dtype=dt)
        bb = b.transpose(-1, -2) if tb else b
        m, k = sa[-2], sa[-1]
        n = bb.shape[-1]
        batch = sa[0] if len(sa) == 3 else 1
        times = timed(lambda: torch.matmul(a, bb), device)
        ms = sum(times) / len(times)
        dtn = "f32" if dt == torch.float32 else "f16"
        print(f"  matmul {dtn} {name:<28} {ms:9.3f} ms  {2 * batch * m * n * k / ms / 1e6:.2f} GFLOP/s")


def ns_bench(device):
    n = 1024
    g = torch.randn(n, n, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
    times = timed(lambda: newton_schulz5(g), device)
    ms = sum(times) / len(times)
    print(f"  newton-schulz 5 steps {n}x{n}           {ms:9.3f} ms  {5 * 3 * 2 * n**3 / ms / 1e6:.2f} GFLOP/s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--k2-dir", help="bench/torch_export.ts's output folder")
    p.add_argument("--json", help="append the training-step rows here as JSON lines")
    p.add_argument("--suite", choices=["k2", "all"], default="k2")
    p.add_argument(
        "--threads", default=None,
        help="CPU threads, a comma list runs the steps once per count (default: all cores, then 1)",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({cores, 1}, reverse=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(device) + " (TF32 off)"
        threads = [None]
    else:
        name = f"{cores} cores; threads {', '.join(map(str, threads))}"
    print(f"torch {torch.__version__} on {device.type}, {name}.")
    rows = []
    if args.k2_dir:
        for t in threads:
            if t is not None:
                torch.set_num_threads(t)
            rows += k2_steps(device, args.k2_dir, "" if t is None else f"×{t}")
    else:
        print("  tiny-K2 training steps skipped: no --k2-dir (run bench/torch_export.ts first)")
    if args.suite == "all":
        matmuls(device)
        ns_bench(device)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
