import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { MuonClip } from "../optim/muon_clip.ts";
import { MuonWithAdamW } from "../optim/split.ts";
import { gpu, microConfig } from "./util.ts";

const micro = microConfig({
  num_attention_heads: 3,
  num_key_value_heads: 3,
  initializer_range: 0.5,
});

const batch = () => ({
  x: mg.tensor(Int32Array.from([1, 5, 9, 2, 30, 7, 7, 0, 3, 3]), { shape: [1, 10] }),
  y: mg.tensor(Int32Array.from([5, 9, 2, 30, 7, 7, 0, 3, 3, 1]), { shape: [1, 10] }),
});

async function weights(m: mg.nn.KimiLM): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, t] of m.namedParameters()) out.set(n, (await t.data()) as Float32Array);
  return out;
}

/** One forward/backward/step of `opt` on `model`. */
async function trainStep(
  model: mg.nn.KimiLM,
  opt: { step(stats: mg.nn.StepStats): Promise<void>; zeroGrad(): void },
) {
  const { x, y } = batch();
  const stats = new mg.nn.StepStats();
  mg.scope(() => model.loss(x, y, { stats }).backward());
  await opt.step(stats);
  opt.zeroGrad();
  stats.dispose();
  x.dispose();
  y.dispose();
}

Deno.test("MuonClip with τ = ∞ is exactly Muon + AdamW", async () => {
  await gpu();
  const a = new mg.nn.KimiLM(micro, { seed: 1 });
  const b = new mg.nn.KimiLM(micro, { seed: 1 });
  const plain = new MuonWithAdamW(a, {
    muon: { lr: 0.02, weightDecay: 0.1 },
    adamw: { lr: 0.02, weightDecay: 0.1 },
  });
  const clip = new MuonClip(b, { lr: 0.02, tau: Infinity });
  await trainStep(a, plain);
  await trainStep(b, clip);
  const [wa, wb] = await Promise.all([weights(a), weights(b)]);
  for (const [n, v] of wa) assert.deepEqual(wb.get(n), v, n);
  assert.deepEqual(await clip.clippedHeads(), []);
  plain.dispose();
  clip.dispose();
  a.dispose();
  b.dispose();
});

Deno.test("MuonClip clips exactly the heads over τ by γ = τ/S_max after the Muon update", async () => {
  await gpu();
  const probe = new mg.nn.KimiLM(micro, { seed: 2 });
  const { x, y } = batch();
  const probeStats = new mg.nn.StepStats();
  mg.noGrad(() => probe.loss(x, y, { stats: probeStats })).dispose();
  const maxima = (await probeStats.read(probe)).maxLogits.map((m) => Array.from(m));
  probeStats.dispose();
  probe.dispose();
  const all = maxima.flat().sort((p, q) => p - q);
  const tau = all[Math.floor(all.length / 2)]; // about half the heads are clipped
  const a = new mg.nn.KimiLM(micro, { seed: 2 });
  const b = new mg.nn.KimiLM(micro, { seed: 2 });
  const plain = new MuonWithAdamW(a, {
    muon: { lr: 0.02, weightDecay: 0.1 },
    adamw: { lr: 0.02, weightDecay: 0.1 },
  });
  const clip = new MuonClip(b, { lr: 0.02, tau });
  await trainStep(a, plain);
  await trainStep(b, clip);
  const clipped = await clip.clippedHeads();
  const expected = maxima.flatMap((m, layer) =>
    m.flatMap((s, head) => (s > tau ? [{ layer, head, s }] : []))
  );
  assert.deepEqual(clipped.map((c) => [c.layer, c.head]), expected.map((e) => [e.layer, e.head]));
  assert.ok(
    clipped.length > 0 && clipped.length < all.length,
    `${clipped.length} of ${all.length} heads clipped`,
  );
  for (const c of clipped) assert.ok(Math.abs(c.gamma - tau / c.maxLogit) <= 1e-6, "γ = τ/S_max");
  const [wa, wb] = await Promise.all([weights(a), weights(b)]);
  const { num_attention_heads: H, qk_nope_head_dim: dn, qk_rope_head_dim: dr, v_head_dim: dv } =
    micro;
  for (const [n, va] of wa) {
    const vb = wb.get(n)!;
    const layer = Number(n.split(".")[2]);
    const gammaOf = (h: number) =>
      clipped.find((c) => c.layer === layer && c.head === h)?.gamma ?? 1;
    const rowFactor = (row: number, perHead: number, split: number, hi: number): number => {
      const g = gammaOf(Math.floor(row / perHead));
      return row % perHead < split ? Math.sqrt(g) : g ** hi;
    };
    let factor: ((row: number) => number) | null = null;
    if (n.endsWith("self_attn.q_b_proj.weight")) factor = (r) => rowFactor(r, dn + dr, dn, 1);
    if (n.endsWith("self_attn.kv_b_proj.weight")) factor = (r) => rowFactor(r, dn + dv, dn, 0);
    if (!factor) {
      assert.deepEqual(vb, va, `${n} is untouched by the clip`);
      continue;
    }
    const cols = va.length / (n.includes("q_b_proj") ? H * (dn + dr) : H * (dn + dv));
    va.forEach((w, i) => {
      const f = factor!(Math.floor(i / cols));
      if (f === 1) assert.equal(vb[i], w, `${n}[${i}] bit-identical`);
      else {assert.ok(
          Math.abs(vb[i] - w * f) <= 4e-7 * Math.abs(w * f) + 1e-30,
          `${n}[${i}] scaled by ${f}`,
        );}
    });
  }
  for (const t of [x, y]) t.dispose();
  plain.dispose();
  clip.dispose();
  a.dispose();
  b.dispose();
});

Deno.test("MuonClip rejects bad configuration, a step without stats and stats without a forward", async () => {
  await gpu();
  const m = new mg.nn.KimiLM(micro, { seed: 3 });
  assert.throws(() => new MuonClip(m, { lr: 0.02, tau: 0 }), /tau must be > 0/);
  const opt = new MuonClip(m, { lr: 0.02 });
  // deno-lint-ignore no-explicit-any
  await assert.rejects(() => (opt.step as any)(), /MuonClip\.step.*needs the step's StepStats/);
  const stats = new mg.nn.StepStats();
  await assert.rejects(() => opt.step(stats), /MuonClip\.step.*no max logits in these StepStats/);
  // an evaluation forward records nothing
  const { x, y } = batch();
  m.eval();
  mg.noGrad(() => m.loss(x, y, { stats })).dispose();
  m.train();
  mg.noGrad(() => m.loss(x, y)).dispose();
  await assert.rejects(() => opt.step(stats), /no max logits in these StepStats/);
  stats.dispose();
  await assert.rejects(() => opt.step(stats), /disposed/);
  for (const t of [x, y]) t.dispose();
  opt.dispose();
  m.dispose();
});
