/**
 * QK-Clip's q/k split exponent α (optim/qk_clip.ts, MuonClip's `qkClipAlpha`): per clipped
 * head, MLA's q_nope rows scale by γ^α, k_nope rows by γ^(1−α), rotary query rows by γ; MHA's
 * q rows by γ^α and k rows by γ^(1−α). Whatever α, every logit of the head scales by γ, so the
 * recomputed max logit is τ. α = 0.5 is bit-identical to the default. Ratios of f32 weights are
 * checked to 3e-7 relative (one rounding of the scaled weight, 2⁻²⁴ ≈ 6e-8, plus pow's error).
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { makeConfig } from "../nn/config.ts";
import { MultiHeadLatentAttention } from "../nn/mla.ts";
import { qkClipMha, qkClipMla } from "../optim/qk_clip.ts";
import { assertMgError, gpu, microConfig, seededValues } from "./util.ts";

await gpu();

const H = 3, dn = 4, dr = 2, dv = 3, D = 12, rkv = 6;
const config = makeConfig({
  hidden_size: D,
  num_attention_heads: H,
  num_key_value_heads: H,
  q_lora_rank: 8,
  kv_lora_rank: rkv,
  qk_nope_head_dim: dn,
  qk_rope_head_dim: dr,
  v_head_dim: dv,
  initializer_range: 1.5,
});

async function weights(m: MultiHeadLatentAttention): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of m.namedParameters()) out.set(name, (await t.data()) as Float32Array);
  return out;
}

function assertRowFactor(
  a0: Float32Array,
  a1: Float32Array,
  rows: number[],
  cols: number,
  f: number,
  what: string,
) {
  for (const r of rows) {
    for (let c = 0; c < cols; c++) {
      const v0 = a0[r * cols + c];
      const v1 = a1[r * cols + c];
      assert.ok(
        Math.abs(v1 - f * v0) <= 3e-7 * Math.abs(f * v0) + 1e-30,
        `${what} row ${r}: ${v1} vs ${f}·${v0}`,
      );
    }
  }
}

for (const alpha of [0, 0.25, 0.5, 0.8, 1]) {
  Deno.test(`QK-Clip MLA with α = ${alpha}: q_nope ×γ^α, k_nope ×γ^(1−α), q_rope ×γ; max logit → τ`, async () => {
    const mla = new MultiHeadLatentAttention(config, { seed: 7 });
    const x = mg.tensor(seededValues(2 * 5 * D, 3, -1, 1), { shape: [2, 5, D] });
    const s0 = new mg.nn.StepStats();
    mg.noGrad(() => mla.forward(x, 0, { stats: s0 })).dispose();
    const before = Array.from(await s0.maxLogits(mla)!.data());
    const tau = Math.max(...before) * 0.6;
    const w0 = await weights(mla);
    const gamma = qkClipMla(mla, config, s0.maxLogits(mla)!, tau, { alpha });
    const g = Array.from(await gamma.data());
    assert.ok(g.some((v) => v < 1), "some head clipped");
    const w1 = await weights(mla);
    const q0 = w0.get("q_b_proj.weight")!, q1 = w1.get("q_b_proj.weight")!;
    const k0 = w0.get("kv_b_proj.weight")!, k1 = w1.get("kv_b_proj.weight")!;
    for (let h = 0; h < H; h++) {
      const range = (start: number, n: number) => Array.from({ length: n }, (_, i) => start + i);
      const qn = range(h * (dn + dr), dn), qr = range(h * (dn + dr) + dn, dr);
      const kn = range(h * (dn + dv), dn), vr = range(h * (dn + dv) + dn, dv);
      const f = (p: number) => p === 0 ? 1 : g[h] ** p;
      assertRowFactor(q0, q1, qn, 8, f(alpha), `head ${h} q_nope`);
      assertRowFactor(q0, q1, qr, 8, g[h], `head ${h} q_rope`);
      assertRowFactor(k0, k1, kn, rkv, f(1 - alpha), `head ${h} k_nope`);
      assertRowFactor(k0, k1, vr, rkv, 1, `head ${h} v`);
    }
    const s1 = new mg.nn.StepStats();
    mg.noGrad(() => mla.forward(x, 0, { stats: s1 })).dispose();
    const after = Array.from(await s1.maxLogits(mla)!.data());
    after.forEach((v, h) => {
      assert.ok(v <= tau * (1 + 1e-5), `head ${h}: ${v} <= τ`);
      if (before[h] > tau) assert.ok(Math.abs(v - tau) <= 2e-5 * tau, `head ${h} at τ`);
    });
    [gamma, s0, s1, x, mla].forEach((t) => t.dispose());
  });
}

Deno.test("QK-Clip: α = 0.5 is bit-identical to the default; MHA splits γ^α / γ^(1−α); α is validated", async () => {
  const run = async (options?: { alpha: number }) => {
    const mla = new MultiHeadLatentAttention(config, { seed: 9 });
    const m = mg.tensor([300, 20, 150]);
    (options ? qkClipMla(mla, config, m, 100, options) : qkClipMla(mla, config, m, 100)).dispose();
    const w = await weights(mla);
    mla.dispose();
    m.dispose();
    return w;
  };
  const a = await run(), b = await run({ alpha: 0.5 });
  for (const [name, v] of a) assert.deepEqual(b.get(name), v, name);

  const d = 4;
  const wq = mg.tensor(seededValues(2 * d * 5, 1, -1, 1), { shape: [2 * d, 5] });
  const wk = mg.tensor(seededValues(2 * d * 5, 2, -1, 1), { shape: [2 * d, 5] });
  const q0 = (await wq.data()) as Float32Array, k0 = (await wk.data()) as Float32Array;
  const m = mg.tensor([400, 50]);
  qkClipMha(wq, wk, m, 100, d, { alpha: 0.75 }).dispose();
  const q1 = (await wq.data()) as Float32Array, k1 = (await wk.data()) as Float32Array;
  assertRowFactor(q0, q1, [0, 1, 2, 3], 5, 0.25 ** 0.75, "MHA q head 0");
  assertRowFactor(k0, k1, [0, 1, 2, 3], 5, 0.25 ** 0.25, "MHA k head 0");
  assertRowFactor(q0, q1, [4, 5, 6, 7], 5, 1, "MHA q head 1 (under τ)");
  assertMgError(() => qkClipMha(wq, wk, m, 100, d, { alpha: 1.5 }), "qkClip", "alpha");
  assertMgError(() => qkClipMha(wq, wk, m, 100, d, { alpha: NaN }), "qkClip", "alpha");
  [wq, wk, m].forEach((t) => t.dispose());
  const lm = new mg.nn.KimiLM(microConfig(), { seed: 0 });
  assertMgError(
    () => new mg.optim.MuonClip(lm, { lr: 1e-3, qkClipAlpha: -0.1 }),
    "MuonClip",
    "qkClipAlpha",
  );
  lm.dispose();
});

Deno.test("MuonClip.headStats: per layer and head max logit and γ of the last step (γ = τ / max where clipped)", async () => {
  const cfg = microConfig();
  const lm = new mg.nn.KimiLM(cfg, { seed: 1 });
  const tau = 0.05;
  const opt = new mg.optim.MuonClip(lm, { lr: 1e-3, tau, qkClipAlpha: 0.3 });
  const stats = new mg.nn.StepStats();
  const ids = [[1, 5, 9, 2, 7, 3, 8, 4]];
  mg.scope(() => lm.loss(ids, { labels: ids }, { stats }).backward());
  await opt.step(stats);
  const { maxLogits, gammas } = await opt.headStats();
  assert.equal(maxLogits.length, cfg.num_hidden_layers);
  assert.equal(gammas[0].length, cfg.num_attention_heads);
  maxLogits.forEach((layer, l) =>
    layer.forEach((s, h) => {
      const want = s > tau ? tau / s : 1;
      assert.ok(Math.abs(gammas[l][h] - want) <= 1e-6 * want, `layer ${l} head ${h}`);
    })
  );
  const clipped = await opt.clippedHeads();
  assert.equal(clipped.length, gammas.flat().filter((v) => v < 1).length);
  stats.dispose();
  opt.dispose();
  lm.dispose();
});
