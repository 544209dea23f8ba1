"""PyTorch beside moongrad on the GPU machine: the same matmul sizes as bench/matmul_bench.ts
(fp32 with TF32 off, and fp16), Newton–Schulz with 5 quintic steps on a 1024² matrix, and one
training step of the tiny Kimi-K2 / DeepSeek-V3 model (transformers' DeepseekV3ForCausalLM in
eager mode, the config of moongrad's `tiny` preset in nn/config.ts).

Every timed iteration ends with torch.cuda.synchronize(); the units match the Deno suite
(ms per iteration and GFLOP/s). Not run in the session that wrote it (no GPU, no torch there).

    python3 bench/torch_bench.py [--device cuda] [--batch 8 --seq 64]
"""

import argparse
import time

import torch


def timed(fn, device, min_s=0.3, min_iters=2):
    """ms per call: one warm-up, then at least min_iters calls and min_s seconds."""
    fn()
    sync(device)
    iters = 0
    t0 = time.perf_counter()
    while iters < min_iters or time.perf_counter() - t0 < min_s:
        fn()
        sync(device)
        iters += 1
    return (time.perf_counter() - t0) * 1e3 / iters


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def line(group, ms, flops):
    print(f"  {group:<36} torch        {ms:9.3f} ms  {flops / ms / 1e6:.2f} GFLOP/s")


def matmuls(device):
    # (name, a shape, b shape, transpose b, dtype) as in bench/matmul_bench.ts.
    cases = [
        ("256x256x256", (256, 256), (256, 256), False, torch.float32),
        ("512x512x512", (512, 512), (512, 512), False, torch.float32),
        ("1024x1024x1024", (1024, 1024), (1024, 1024), False, torch.float32),
        ("1024x256 @ 256x512", (1024, 256), (256, 512), False, torch.float32),
        ("8x192x320 @ (8x96x320)^T", (8, 192, 320), (8, 96, 320), True, torch.float32),
        ("256x256x256", (256, 256), (256, 256), False, torch.float16),
        ("512x512x512", (512, 512), (512, 512), False, torch.float16),
        # Larger sizes only a GPU run can afford.
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
        ms = timed(lambda: torch.matmul(a, bb), device)
        dtn = "f32" if dt == torch.float32 else "f16"
        line(f"matmul {dtn} {name}", ms, 2 * batch * m * n * k)


def newton_schulz(g, steps=5, eps=1e-7):
    """Quintic Newton–Schulz orthogonalisation (Muon's coefficients), fp32."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + eps)
    transpose = x.shape[0] > x.shape[1]
    if transpose:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        bm = b * s + c * (s @ s)
        x = a * x + bm @ x
    return x.T if transpose else x


def ns_bench(device):
    n = 1024
    g = torch.randn(n, n, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
    ms = timed(lambda: newton_schulz(g), device)
    # Per step: X X^T (2n³), S S (2n³), B X (2n³) for a square n×n matrix.
    line(f"newton-schulz 5 steps {n}x{n}", ms, 5 * 3 * 2 * n**3)


def tiny_config():
    """moongrad's `tiny` preset (nn/config.ts), as a transformers DeepseekV3Config."""
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=384,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=8,
        routed_scaling_factor=2.5,
        kv_lora_rank=32,
        q_lora_rank=64,
        qk_rope_head_dim=8,
        v_head_dim=16,
        qk_nope_head_dim=16,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        hidden_act="silu",
        max_position_embeddings=1024,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        rope_theta=10000,
        rope_scaling=None,
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )


def tiny_k2_step(device, batch, seq):
    try:
        from transformers import DeepseekV3ForCausalLM
    except ImportError as e:  # transformers missing or too old for DeepseekV3
        print(f"  tiny-K2 training step skipped: {e}")
        return
    cfg = tiny_config()
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(cfg).to(device=device, dtype=torch.float32)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()

    ms = timed(step, device)
    params = sum(p.numel() for p in model.parameters())
    # Rough count: 6 · tokens · parameters (dense equivalent; the MoE layers use fewer).
    line(f"tiny-K2 step B{batch} T{seq} (SGD)", ms, 6 * batch * seq * params)
    print(f"    ({params} parameters; GFLOP/s use 6·tokens·params, an upper bound for MoE)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name} (TF32 off)")
    matmuls(device)
    ns_bench(device)
    tiny_k2_step(device, args.batch, args.seq)


if __name__ == "__main__":
    main()
