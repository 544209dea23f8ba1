import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { qkClipMha } from "../optim/qk_clip.ts";
import { check, clipLandingBound, fc, gpu, seededValues } from "./util.ts";
import { runtimeStats } from "../core/runtime.ts";

/**
 * Float64 causal logits of every head, q_i·k_j·scale for j ≤ i, from x [T, D] and W [H·d, D],
 * with the magnitude Σ_e |q_ie|·|k_je|·scale (|q| from Σ|x||w|) that bounds their rounding error.
 */
function logits(
  x: Float32Array,
  wq: Float32Array,
  wk: Float32Array,
  T: number,
  D: number,
  H: number,
  d: number,
): { value: number[][]; magnitude: number[][] } {
  const proj = (w: Float32Array, abs: boolean) =>
    Array.from({ length: T }, (_, t) =>
      Array.from({ length: H * d }, (_, r) => {
        let s = 0;
        for (let c = 0; c < D; c++) {
          s += abs ? Math.abs(x[t * D + c] * w[r * D + c]) : x[t * D + c] * w[r * D + c];
        }
        return s;
      }));
  const scale = 1 / Math.sqrt(d);
  const pairs = (q: number[][], k: number[][]) =>
    Array.from({ length: H }, (_, h) => {
      const out: number[] = [];
      for (let i = 0; i < T; i++) {
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let e = 0; e < d; e++) s += q[i][h * d + e] * k[j][h * d + e];
          out.push(s * scale);
        }
      }
      return out;
    });
  return {
    value: pairs(proj(wq, false), proj(wk, false)),
    magnitude: pairs(proj(wq, true), proj(wk, true)),
  };
}

/** Runs the fused attention on x with these weights and returns its per-head max logits. */
function maxLogitsOf(x: mg.Tensor, wq: mg.Tensor, wk: mg.Tensor, H: number, d: number): mg.Tensor {
  return mg.noGrad(() =>
    mg.scope(() => {
      const T = x.shape[0];
      const heads = (w: mg.Tensor) =>
        x.matmul(w.transpose()).reshape([1, T, H, d]).permute([0, 2, 1, 3]);
      const q = heads(wq);
      const k = heads(wk);
      const r = mg.attention(q, k, k, { scale: 1 / Math.sqrt(d) });
      return r.maxLogits;
    })
  );
}

const arbCase = fc.record({
  T: fc.integer({ min: 1, max: 9 }),
  D: fc.integer({ min: 2, max: 12 }),
  H: fc.integer({ min: 1, max: 4 }),
  d: fc.integer({ min: 1, max: 6 }),
  seed: fc.integer({ min: 1, max: 1e6 }),
  weightScale: fc.double({ min: 0.5, max: 6, noNaN: true }),
  tauFraction: fc.double({ min: 0.2, max: 1.5, noNaN: true }),
});

Deno.test("QK-Clip (MHA) property: recomputed max ≤ τ, unclipped heads bit-identical, logits scale by γ, idempotent", async () => {
  await gpu();
  await check(arbCase, async ({ T, D, H, d, seed, weightScale, tauFraction }) => {
    const x = mg.tensor(seededValues(T * D, seed, -1, 1), { shape: [T, D] });
    const wq = mg.tensor(seededValues(H * d * D, seed + 1, -weightScale, weightScale), {
      shape: [H * d, D],
    });
    const wk = mg.tensor(seededValues(H * d * D, seed + 2, -weightScale, weightScale), {
      shape: [H * d, D],
    });
    const m0 = maxLogitsOf(x, wq, wk, H, d);
    const before = Array.from(await m0.data());
    const top = Math.max(...before);
    const tau = Math.max(top * tauFraction, 1e-3);
    const [xq, q0, k0] = await Promise.all([x.data(), wq.data(), wk.data()]);
    const gamma = qkClipMha(wq, wk, m0, tau, d);
    const g = Array.from(await gamma.data());
    const [q1, k1] = await Promise.all([wq.data(), wk.data()]);
    const L0 = logits(xq as Float32Array, q0 as Float32Array, k0 as Float32Array, T, D, H, d);
    const L1 = logits(xq as Float32Array, q1 as Float32Array, k1 as Float32Array, T, D, H, d);
    for (let h = 0; h < H; h++) {
      assert.ok(g[h] > 0 && g[h] <= 1, `γ_${h} = ${g[h]} in (0, 1]`);
      const rows = (a: ArrayLike<number>) => Array.from(a).slice(h * d * D, (h + 1) * d * D);
      if (before[h] <= tau) {
        assert.equal(g[h], 1);
        assert.deepEqual(rows(q1), rows(q0), `head ${h} q untouched`);
        assert.deepEqual(rows(k1), rows(k0), `head ${h} k untouched`);
      } else {
        assert.ok(Math.abs(g[h] - tau / before[h]) <= 1e-6 * g[h], `γ = τ/S`);
        L0.value[h].forEach((l, i) => {
          // Each clipped weight is √γ·w rounded to f32 once (relative error ≤ 2⁻²⁴), so the
          // logit moves by at most ~2·2⁻²⁴ of its magnitude Σ|q||k| (1e-6 leaves margin).
          const bound = 1e-6 * g[h] * L0.magnitude[h][i] + 1e-12;
          assert.ok(
            Math.abs(L1.value[h][i] - g[h] * l) <= bound,
            `logit ${i} of head ${h} scales by γ: ${L1.value[h][i]} vs ${g[h] * l} (± ${bound})`,
          );
        });
      }
    }
    const m1 = maxLogitsOf(x, wq, wk, H, d);
    const after = Array.from(await m1.data());
    after.forEach((v, h) => {
      const margin = clipLandingBound(tau, g[h], Math.max(...L0.magnitude[h]));
      assert.ok(v <= tau + margin, `head ${h}: ${v} ≤ τ ${tau} (+ ${margin})`);
      if (before[h] > tau) {
        assert.ok(
          Math.abs(v - tau) <= margin,
          `clipped head ${h} lands on τ: ${v} vs ${tau} ± ${margin}`,
        );
      }
    });
    // Clipping again at a τ no recomputed max exceeds is a no-op.
    const again = qkClipMha(wq, wk, m1, Math.max(tau * (1 + 1e-4), ...after), d);
    const [q2, k2] = await Promise.all([wq.data(), wk.data()]);
    assert.deepEqual(Array.from(q2), Array.from(q1));
    assert.deepEqual(Array.from(k2), Array.from(k1));
    for (const t of [x, wq, wk, m0, m1, gamma, again]) t.dispose();
  }, 15);
});

Deno.test("QK-Clip with τ = ∞ changes nothing", async () => {
  await gpu();
  const wq = mg.randn([6, 4], { seed: 1, std: 5 });
  const wk = mg.randn([6, 4], { seed: 2, std: 5 });
  const q0 = await wq.data();
  const k0 = await wk.data();
  const m = mg.tensor([1e30, 5, -3]);
  const g = qkClipMha(wq, wk, m, Infinity, 2);
  assert.deepEqual(Array.from(await g.data()), [1, 1, 1]);
  assert.deepEqual(await wq.data(), q0);
  assert.deepEqual(await wk.data(), k0);
  assert.throws(() => qkClipMha(wq, wk, m, 0, 2), /tau must be > 0/);
  assert.throws(() => qkClipMha(wq, wk, m, 1, 3), /expected 3 heads × 3 rows/);
  for (const t of [wq, wk, m, g]) t.dispose();
});

Deno.test("QK-Clip is one dispatch per layer, and q/k views of one fused weight clip the same", async () => {
  await gpu();
  const m = mg.tensor([150, 60, 400]);
  const fused = mg.randn([12, 4], { seed: 3 });
  const wq = mg.randn([6, 4], { seed: 4 });
  const wk = mg.randn([6, 4], { seed: 5 });
  const before = runtimeStats().dispatches;
  qkClipMha(wq, wk, m, 100, 2, { alpha: 0.3 }).dispose();
  assert.equal(runtimeStats().dispatches - before, 1);
  // The same weights as two views of one tensor (bound once per dispatch).
  const q2 = fused.slice(0, 0, 6);
  const k2 = fused.slice(0, 6, 12);
  const w0 = mg.randn([6, 4], { seed: 4 });
  const w1 = mg.randn([6, 4], { seed: 5 });
  q2.assign(w0);
  k2.assign(w1);
  const g = qkClipMha(q2, k2, m, 100, 2, { alpha: 0.3 });
  assert.deepEqual(Array.from(await q2.data()), Array.from(await wq.data()));
  assert.deepEqual(Array.from(await k2.data()), Array.from(await wk.data()));
  assert.deepEqual(Array.from(await g.data()), [100 / 150, 1, 100 / 400].map(Math.fround));
  for (const t of [m, fused, wq, wk, q2, k2, w0, w1, g]) t.dispose();
});
