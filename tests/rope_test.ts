/**
 * RoPE beyond the plain interleaved case: YaRN's tables and factors (nn/rope.ts) against the
 * float64 references of tests/reference/nn.ts and against transformers' own f32 table, the
 * half-split pair layout (`rope_interleave: false`) and the attention factor in the rope op
 * (forward and backward), and accuracy at Kimi K2's long-context positions (~1e5).
 *
 * The HF tables below were computed once with PyTorch 1.13 (CPU, f32) by a script that
 * re-types transformers' `_compute_yarn_parameters` arithmetic (torch f32 `base ** (arange/dim)`,
 * `1/pos_freqs`, `1/(factor·pos_freqs)`, f32 ramp and blend); they are bit patterns.
 *
 * Tolerances: tables are compared in f32 ulps (the library rounds a float64 computation once,
 * so it must equal the float64 reference rounded, bit for bit; HF computes in f32, measured at
 * most 1 ulp away for K2 and DeepSeek-V3). The rope op rotates O(1) values by one sin/cos of
 * the same f32 angle the reference uses: atol 1e-5 as in nn_layers_test. At positions ~1e5
 * (angles up to 1.3e5 rad) the stated bound is 1e-6 absolute for |x| ≤ 2, measured 2.5e-7 on
 * llvmpipe (2.6e-7 on Dawn/SwiftShader); the former 3-piece reduction (exact only to |k| <
 * 2^13) gave 4.0e-6 there. mg.sin / mg.cos for |x| ≤ 1.6e6: 2.5e-7 absolute (about 2 ulps of
 * 1), measured 8.2e-8; the former reduction was off by 0.062 at 1.6e6.
 */
import * as mg from "../mod.ts";
import * as nn from "../nn/mod.ts";
import assert from "node:assert/strict";
import { ropeConcat } from "../ops/rope.ts";
import { makeConfig, type YarnRope } from "../nn/config.ts";
import {
  assertClose,
  assertTensorClose,
  check,
  countDispatches,
  expectMgError,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import { dot, nd, type NDArray, numericGrad } from "./reference/ndarray.ts";
import {
  invFreqRef,
  mscaleRef,
  ropeHfLiteral,
  ropeRef,
  ropeTablesRef,
  ropeVjp,
  yarnAttentionFactorRef,
  yarnInvFreq64,
} from "./reference/nn.ts";

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const ROT = { rtol: 0, atol: 1e-5 };

const K2 = makeConfig("kimi-k2").rope_parameters as YarnRope;
const DSV3: YarnRope = {
  rope_type: "yarn",
  rope_theta: 10000,
  factor: 40,
  original_max_position_embeddings: 4096,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1,
  mscale_all_dim: 1,
  attention_factor: null,
  truncate: true,
};

/** transformers' f32 inv_freq (dim 64), bit patterns from PyTorch (see the file header). */
const HF_F32: Record<"k2" | "dsv3" | "dsv3NoTruncate", number[]> = {
  k2: [
    0x3f800000,
    0x3f368e73,
    0x3f022edb,
    0x3eb9ab7f,
    0x3e84673d,
    0x3e3cd623,
    0x3e06a951,
    0x3dc00e9b,
    0x3d88f541,
    0x3d435523,
    0x3d0b4b37,
    0x3cc6a9f7,
    0x3c8dab61,
    0x3c4a0d56,
    0x3c1015e9,
    0x3bcd7f82,
    0x3b928aff,
    0x3b5100b8,
    0x3b150acf,
    0x3ad4913c,
    0x38179588,
    0x37d8314f,
    0x379a2b5b,
    0x375be137,
    0x371ccc77,
    0x36dfa138,
    0x369f790d,
    0x36637198,
    0x36223151,
    0x35e752a0,
    0x35a4f575,
    0x356b4496,
  ],
  dsv3: [
    0x3f800000,
    0x3f3ff911,
    0x3f0ff59a,
    0x3ed7e89b,
    0x3ea1e89b,
    0x3e72d423,
    0x3e361887,
    0x3e088d77,
    0x3dcccccd,
    0x3d99940d,
    0x3d6655c2,
    0x3d1fc5ba,
    0x3cdc321b,
    0x3c968dc3,
    0x3c4bf283,
    0x3c088d77,
    0x3bb43959,
    0x3b697066,
    0x3b136a16,
    0x3ab3a2cd,
    0x3a4f3e37,
    0x39d99312,
    0x393a7753,
    0x380bd471,
    0x37d1b717,
    0x379d43a3,
    0x376bdcf0,
    0x3730df51,
    0x3704a2b3,
    0x36c6ecdd,
    0x36952c42,
    0x365fba4f,
  ],
  dsv3NoTruncate: [
    0x3f800000,
    0x3f3ff911,
    0x3f0ff59a,
    0x3ed7e89b,
    0x3ea1e89b,
    0x3e72d423,
    0x3e361887,
    0x3e088d77,
    0x3dcccccd,
    0x3d99940d,
    0x3d6655c2,
    0x3d25587b,
    0x3ce301e2,
    0x3c9a806a,
    0x3c5020d8,
    0x3c0a6214,
    0x3bb50332,
    0x3b67afca,
    0x3b0fe640,
    0x3aab1036,
    0x3a3d6f6d,
    0x39b77117,
    0x38f846e2,
    0x380bd471,
    0x37d1b717,
    0x379d43a3,
    0x376bdcf0,
    0x3730df51,
    0x3704a2b3,
    0x36c6ecdd,
    0x36952c42,
    0x365fba4f,
  ],
};

/** f32 bit pattern of a (positive) number. */
const bits = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0];
/** Distance in f32 ulps between two positive f32 values. */
const ulps = (a: number, b: number) => Math.abs(bits(a) - bits(b));

/** A GPU tensor and its float64 copy from the same seeded values. */
function pair(shape: number[], seed: number, lo = -2, hi = 2, requiresGrad = false) {
  const v = seededValues(numel(shape), seed, lo, hi);
  return { t: mg.tensor(v, { shape, requiresGrad }), r: nd(v, shape) };
}

/** Positions of each row of x [..., T, d] for an offset (row t of T has offset + t). */
function offsetPositions(shape: readonly number[], offset: number): number[] {
  const T = shape[shape.length - 2];
  return Array.from({ length: numel(shape.slice(0, -1)) }, (_, r) => offset + (r % T));
}

/** Max |a − e|. */
function maxAbs(a: ArrayLike<number>, e: NDArray): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - e.data[i]));
  return m;
}

// ---- float64 references ---------------------------------------------------------------------

Deno.test("reference: ropeRef's two layouts are HF's apply_rotary_pos_emb(_interleave) formulas; vjps vs numericGrad", () => {
  const d = 8, rows = 6;
  const x = nd(seededValues(rows * d, 3, -2, 2), [2, 3, d]);
  const k = nd(seededValues(rows * d, 4, -2, 2), [2, 3, d]);
  const pos = [0, 7, 40, 3, 1000, 99999];
  const inv = invFreqRef(d, 10000);
  const f = 1.25;
  const tol = { rtol: 0, atol: 1e-13 };
  // rope_interleave false: same layout as HF.
  const half = ropeRef(x, pos, inv, 1, { interleaved: false, attentionFactor: f });
  assertClose(half.data, ropeHfLiteral(x, pos, inv, false, f), tol, "half-split == HF");
  // rope_interleave true: HF returns the pairs de-interleaved; ropeRef keeps them in place.
  const inter = ropeRef(x, pos, inv, 1, { attentionFactor: f });
  const hf = ropeHfLiteral(x, pos, inv, true, f);
  const deinterleaved = Array.from({ length: rows * d }, (_, i) => {
    const r = Math.floor(i / d), j = i % d;
    return inter.data[r * d + (j < d / 2 ? 2 * j : 2 * (j - d / 2) + 1)];
  });
  assertClose(deinterleaved, hf, tol, "interleaved == HF de-interleaved");
  // Either way the q·k products attention uses are the same.
  const kInter = ropeRef(k, pos, inv, 1, { attentionFactor: f });
  const kHf = ropeHfLiteral(k, pos, inv, true, f);
  for (let r = 0; r < rows; r++) {
    let a = 0, b = 0;
    for (let j = 0; j < d; j++) {
      a += inter.data[r * d + j] * kInter.data[r * d + j];
      b += hf.data[r * d + j] * kHf.data[r * d + j];
    }
    if (Math.abs(a - b) > 1e-12) throw new Error(`row ${r}: q·k ${a} != HF ${b}`);
  }
  // The two layouts differ (a test of the layout must be able to fail).
  if (half.data.every((v, i) => Math.abs(v - inter.data[i]) < 1e-6)) {
    throw new Error("layouts agree on random data");
  }
  const g = nd(seededValues(rows * d, 5, -1, 1), [2, 3, d]);
  for (const interleaved of [true, false]) {
    const o = { interleaved, attentionFactor: f };
    const num = numericGrad((v) => dot(ropeRef(v, pos.map((p) => p % 50), inv, 1, o), g), x);
    assertClose(ropeVjp(g, pos.map((p) => p % 50), inv, o).data, num, {
      rtol: 1e-6,
      atol: 1e-8,
    }, `vjp interleaved=${interleaved}`);
  }
});

Deno.test("reference: YaRN tables of Kimi K2 and DeepSeek-V3 follow their correction ranges (worked by hand)", () => {
  // K2: dim 64, θ 50000, L 4096, β 1 and 1: cd(1) = 64·ln(4096/2π)/(2·ln 50000) = 19.158,
  // so low = 19, high = 20: pairs ≤ 19 keep θ^(−2i/64), pairs ≥ 20 are divided by 32.
  const k2 = yarnInvFreq64(64, K2);
  for (let i = 0; i < 32; i++) {
    const want = Math.pow(50000, -i / 32) / (i >= 20 ? 32 : 1);
    if (Math.abs(k2[i] / want - 1) > 1e-15) throw new Error(`K2 pair ${i}: ${k2[i]} != ${want}`);
  }
  // DeepSeek-V3: θ 10000, β 32 → cd = 10.47 → low 10; β 1 → 22.51 → high 23; ramp (i − 10)/13.
  const ds = yarnInvFreq64(64, DSV3);
  for (let i = 0; i < 32; i++) {
    const w = Math.min(1, Math.max(0, (i - 10) / 13));
    const t = Math.pow(10000, -i / 32);
    const want = t / 40 * w + t * (1 - w);
    if (Math.abs(ds[i] / want - 1) > 1e-14) throw new Error(`DSV3 pair ${i}: ${ds[i]} != ${want}`);
  }
  // The factors: m(s, 1) = 1 + 0.1·ln s; mscale = mscale_all_dim cancels in the cos/sin factor.
  assertClose([mscaleRef(32, 1), mscaleRef(40, 1)], [1.3465735902799727, 1.3688879454113936], {
    rtol: 1e-15,
    atol: 0,
  }, "m(s, 1)");
  if (yarnAttentionFactorRef(K2) !== 1 || yarnAttentionFactorRef(DSV3) !== 1) {
    throw new Error("K2 / DeepSeek-V3 cos/sin factor must be 1");
  }
});

// ---- the library's tables -------------------------------------------------------------------

Deno.test("YaRN inv_freq: the f32 table is the float64 reference rounded once (K2, DeepSeek-V3, truncate false, guard, clamp) and within 1 ulp of HF's f32 table", () => {
  const variants: [string, YarnRope, number][] = [
    ["K2", K2, 64],
    ["DeepSeek-V3", DSV3, 64],
    ["DeepSeek-V3 truncate false", { ...DSV3, truncate: false }, 64],
    // β_fast = β_slow, no truncation: low == high exactly, widened by 0.001 (a step).
    ["low == high guard", { ...DSV3, beta_fast: 4, beta_slow: 4, truncate: false }, 64],
    // A huge original context pushes high past dim − 1 (clamped), a tiny one puts low < 0.
    ["clamped high", { ...DSV3, original_max_position_embeddings: 2 ** 40, factor: 2 }, 16],
    ["clamped low", { ...DSV3, original_max_position_embeddings: 8, factor: 4 }, 8],
    // Both ends clamped to 0 (cd(β_slow) in (−1, 0]): low == high == 0 at a pair index, where
    // only the 0.001 guard avoids 0/0 (pair 0 keeps θ^0, the rest are interpolated).
    ["zero-width at pair 0", { ...DSV3, original_max_position_embeddings: 6, factor: 4 }, 8],
    ["micro", { ...DSV3, original_max_position_embeddings: 16, factor: 4 }, 8],
  ];
  for (const [name, y, dim] of variants) {
    const lib = nn.rotaryFrequencies(dim, y).invFreq;
    const ref = yarnInvFreq64(dim, y).map(Math.fround);
    for (let i = 0; i < dim / 2; i++) {
      if (lib[i] !== ref[i]) throw new Error(`${name} pair ${i}: ${lib[i]} != ${ref[i]}`);
    }
  }
  const [lo, hi] = nn.yarnCorrectionRange(64, {
    ...DSV3,
    beta_fast: 4,
    beta_slow: 4,
    truncate: false,
  });
  if (lo !== hi) throw new Error(`guard case: ${lo} != ${hi}`);
  const zw = nn.yarnCorrectionRange(8, { ...DSV3, original_max_position_embeddings: 6 });
  if (zw[0] !== 0 || zw[1] !== 0) throw new Error(`zero-width range ${zw}`);
  const zt = nn.rotaryFrequencies(8, { ...DSV3, original_max_position_embeddings: 6, factor: 4 });
  assertClose(zt.invFreq, [1, 0.1, 0.01, 0.001].map((v, i) => Math.fround(i ? v / 4 : v)), {
    rtol: 0,
    atol: 0,
  }, "zero-width table");
  if (nn.yarnCorrectionRange(16, variants[4][1])[1] !== 15) throw new Error("high not clamped");
  if (nn.yarnCorrectionRange(8, variants[5][1])[0] !== 0) throw new Error("low not clamped");
  const range = (y: YarnRope) => nn.yarnCorrectionRange(64, y).join();
  if (range(K2) !== "19,20" || range(DSV3) !== "10,23") {
    throw new Error(`correction ranges ${range(K2)} / ${range(DSV3)}`);
  }
  // Against transformers' f32 arithmetic. truncate false: HF's f32 ramp (1 − (1 − ramp))
  // cancels, leaving its own table up to 12 ulp (1.4e-6 relative) from the exact value.
  for (
    const [name, y, maxUlps] of [["k2", K2, 1], ["dsv3", DSV3, 1], ["dsv3NoTruncate", {
      ...DSV3,
      truncate: false,
    }, 16]] as const
  ) {
    const lib = nn.rotaryFrequencies(64, y).invFreq;
    const hf = new Float32Array(Uint32Array.from(HF_F32[name]).buffer);
    let worst = 0;
    for (let i = 0; i < 32; i++) worst = Math.max(worst, ulps(lib[i], hf[i]));
    if (worst > maxUlps) throw new Error(`${name}: ${worst} ulps from HF's f32 table`);
  }
  // "default": θ^(−2i/d), factor 1.
  const plain = nn.rotaryFrequencies(8, { rope_type: "default", rope_theta: 50000 });
  assertClose(plain.invFreq, invFreqRef(8, 50000), { rtol: 0, atol: 0 }, "default table");
  if (plain.attentionFactor !== 1) throw new Error("default attention factor");
});

Deno.test("YaRN attention factor (cos/sin) and DeepseekV3Attention's softmax-scale factor", () => {
  const m = (s: number, mu: number) => 1 + 0.1 * mu * Math.log(s);
  const cases: [string, YarnRope, number, number][] = [
    // [name, rope, cos/sin factor, softmax multiplier]
    ["K2", K2, 1, m(32, 1) ** 2],
    ["DeepSeek-V3", DSV3, 1, m(40, 1) ** 2],
    ["mscale only", { ...DSV3, mscale: 0.707, mscale_all_dim: null }, m(40, 1), 1],
    ["mscale_all_dim 0", { ...DSV3, mscale_all_dim: 0 }, m(40, 1), 1],
    [
      "both mscales",
      { ...DSV3, mscale: 1, mscale_all_dim: 0.5 },
      m(40, 1) / m(40, 0.5),
      m(40, 0.5) ** 2,
    ],
    ["explicit attention_factor", { ...DSV3, attention_factor: 0.9 }, 0.9, m(40, 1) ** 2],
    ["no mscales", { ...DSV3, mscale: null, mscale_all_dim: null }, m(40, 1), 1],
    ["factor 1", { ...DSV3, factor: 1 }, 1, 1],
  ];
  for (const [name, y, af, sm] of cases) {
    const got = [nn.rotaryFrequencies(8, y).attentionFactor, nn.softmaxScaleFactor(y)];
    const ref = ropeTablesRef(8, y);
    assertClose(got, [af, sm], { rtol: 1e-15, atol: 0 }, `${name} (by hand)`);
    assertClose(got, [ref.factor, ref.softmax], { rtol: 1e-15, atol: 0 }, `${name} (reference)`);
  }
  assertClose([nn.softmaxScaleFactor(K2)], [1.8132604340394958], { rtol: 1e-15, atol: 0 }, "K2");
  if (nn.softmaxScaleFactor({ rope_type: "default", rope_theta: 1e4 }) !== 1) {
    throw new Error("default rope must not scale the softmax");
  }
});

// ---- the rope op ------------------------------------------------------------------------------

Deno.test("rope op: half-split and interleaved pairs with an attention factor, forward and backward vs the reference", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
    T: fc.integer({ min: 1, max: 7 }),
    half: fc.integer({ min: 1, max: 8 }),
    offset: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20000 })),
    interleaved: fc.boolean(),
    factor: fc.constantFrom(1, 1.1386, 0.75),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, T, half, offset, interleaved, factor, seed }) => {
    const shape = [...lead, T, 2 * half];
    const x = pair(shape, seed, -3, 3, true);
    const pos = offsetPositions(shape, offset);
    const inv = invFreqRef(2 * half, 10000);
    const o = { interleaved, attentionFactor: factor };
    const y = nn.applyRope(x.t, offset, 10000, o);
    await assertTensorClose(y, ropeRef(x.r, pos, inv, 1, o), ROT, "rope y");
    const gy = pair(shape, seed + 1, -3, 3);
    y.backward(gy.t);
    await assertTensorClose(x.t.grad!, ropeVjp(gy.r, pos, inv, o), ROT, "rope dx");
    for (const t of [x.t, y, gy.t]) t.dispose();
  }, 16);
  // A strided view (q_rope sliced out of [q_nope | q_rope]) with a positions tensor.
  const q = pair([2, 5, 12], 7, -2, 2, true);
  const qr = q.t.slice(2, 4, 12);
  const posT = mg.tensor([5, 0, 77, 4096, 9], { dtype: "i32" });
  const inv = nn.rotaryFrequencies(8, { ...DSV3, original_max_position_embeddings: 16, factor: 4 });
  const invT = mg.tensor(inv.invFreq);
  const y = mg.nn.rope(qr, posT, invT, { interleaved: false, attentionFactor: 1.2 });
  const qrRef = nd(
    Array.from({ length: 2 * 5 * 8 }, (_, i) => q.r.data[Math.floor(i / 8) * 12 + 4 + (i % 8)]),
    [2, 5, 8],
  );
  const rowPos = Array.from({ length: 10 }, (_, r) => [5, 0, 77, 4096, 9][r % 5]);
  const o = { interleaved: false, attentionFactor: 1.2 };
  await assertTensorClose(y, ropeRef(qrRef, rowPos, [...inv.invFreq], 1, o), ROT, "strided y");
  const gy = pair([2, 5, 8], 8);
  y.backward(gy.t);
  const dq = await q.t.grad!.data();
  const dref = ropeVjp(gy.r, rowPos, [...inv.invFreq], o);
  for (let r = 0; r < 10; r++) {
    for (let j = 0; j < 12; j++) {
      const want = j < 4 ? 0 : dref.data[r * 8 + j - 4];
      if (Math.abs(dq[r * 12 + j] - want) > 1e-5) throw new Error(`dq[${r}, ${j}]`);
    }
  }
  for (const t of [q.t, qr, posT, invT, y, gy.t]) t.dispose();
});

Deno.test("rope at Kimi K2's long-context positions (~1e5 of 131072): within 1e-6 of float64 for the same f32 angle", async () => {
  await gpu();
  const d = 64;
  const tables: [string, number[]][] = [
    ["K2 YaRN", [...nn.rotaryFrequencies(d, K2).invFreq]],
    ["θ 50000", invFreqRef(d, 50000)],
  ];
  const x = pair([2, 6, d], 21, -2, 2);
  const positions = [99999, 100000, 123457, 131071, 65537, 4097];
  const report: string[] = [];
  for (const [name, inv] of tables) {
    const invT = mg.tensor(Float32Array.from(inv));
    for (const interleaved of [true, false]) {
      const o = { interleaved };
      // An offset (rows 131066..131071) and an explicit positions tensor.
      const y1 = mg.nn.rope(x.t, 131072 - 6, invT, o);
      const p = mg.tensor(positions, { dtype: "i32" });
      const y2 = mg.nn.rope(x.t, p, invT, o);
      const e1 = maxAbs(
        await y1.data(),
        ropeRef(x.r, offsetPositions([2, 6, d], 131066), inv, 1, o),
      );
      const rowPos = Array.from({ length: 12 }, (_, r) => positions[r % 6]);
      const e2 = maxAbs(await y2.data(), ropeRef(x.r, rowPos, inv, 1, o));
      report.push(
        `${name} ${interleaved ? "interleaved" : "half"}: ${e1.toExponential(2)} ${
          e2.toExponential(2)
        }`,
      );
      if (e1 > 1e-6 || e2 > 1e-6) throw new Error(`max |error| at ~1e5: ${report.join("; ")}`);
      for (const t of [y1, p, y2]) t.dispose();
    }
    invT.dispose();
  }
  if (Deno.env.get("MG_REPORT")) console.log(report.join("\n"));
  x.t.dispose();
});

Deno.test("mg.sin / mg.cos stay within 2.5e-7 of float64 for |x| up to 1.6e6 (the exact range reduction)", async () => {
  await gpu();
  const xs: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const mag = Math.fround(Math.exp((i / 2000) * Math.log(1.6e6)));
    xs.push(i % 2 ? mag : -mag);
  }
  // Near multiples of π/2, where the reduction cancels most.
  for (let k = 1; k < 1e6; k = Math.ceil(k * 1.7)) xs.push(Math.fround((k * Math.PI) / 2));
  const x = mg.tensor(Float32Array.from(xs));
  const s = x.sin(), c = x.cos();
  const sv = await s.data(), cv = await c.data();
  let worst = 0;
  for (let i = 0; i < xs.length; i++) {
    worst = Math.max(worst, Math.abs(sv[i] - Math.sin(xs[i])), Math.abs(cv[i] - Math.cos(xs[i])));
  }
  if (worst > 2.5e-7) throw new Error(`sin/cos max |error| ${worst} for |x| <= 1.6e6`);
  if (Deno.env.get("MG_REPORT")) console.log(`sin/cos max |error| ${worst}`);
  for (const t of [x, s, c]) t.dispose();
});

Deno.test("RotaryEmbedding from rope_parameters: YaRN table and factor, either layout; errors name the op", async () => {
  await gpu();
  const y: YarnRope = {
    ...DSV3,
    original_max_position_embeddings: 16,
    factor: 4,
    mscale: 0.707,
    mscale_all_dim: null,
  };
  for (const interleaved of [true, false]) {
    const rot = new nn.RotaryEmbedding(8, { rope: y, interleaved });
    const f = nn.rotaryFrequencies(8, y);
    if (rot.attentionFactor !== f.attentionFactor || rot.attentionFactor === 1) {
      throw new Error(`attention factor ${rot.attentionFactor}`);
    }
    assertClose(await rot.invFreq.data(), f.invFreq, { rtol: 0, atol: 0 }, "table");
    const x = pair([1, 2, 5, 8], 31);
    const out = rot.forward(x.t, 40);
    const o = { interleaved, attentionFactor: f.attentionFactor };
    await assertTensorClose(
      out,
      ropeRef(x.r, offsetPositions([1, 2, 5, 8], 40), [...f.invFreq], 1, o),
      ROT,
      "forward",
    );
    for (const t of [x.t, out]) t.dispose();
    rot.dispose();
  }
  const x8 = mg.zeros([2, 8]);
  expectMgError(() => mg.nn.rope(x8, 0, 10000, { interleaved: 1 as never }), "rope", "interleaved");
  expectMgError(
    () => mg.nn.rope(x8, 0, 10000, { attentionFactor: NaN }),
    "rope",
    "attentionFactor",
  );
  expectMgError(() => nn.rotaryFrequencies(7, K2), "rotaryFrequencies", "even");
  expectMgError(
    () => new nn.RotaryEmbedding(8, { rope: { ...K2, beta_fast: -1 } }),
    "RotaryEmbedding",
    "beta_fast",
  );
  x8.dispose();
});

/** float64 reference of ropeConcat: concat([pass, ropeRef(x)]) over rows. */
function ropeConcatRef(
  pass: NDArray,
  x: NDArray,
  pos: number[],
  inv: number[],
  o: { interleaved: boolean; attentionFactor: number },
): NDArray {
  const dp = pass.shape[pass.shape.length - 1], d = x.shape[x.shape.length - 1];
  const rows = x.size / d;
  const rx = ropeRef(x, pos, inv, 1, o);
  const out = new Float64Array(rows * (dp + d));
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < dp; j++) out[r * (dp + d) + j] = pass.data[r * dp + j];
    for (let j = 0; j < d; j++) out[r * (dp + d) + dp + j] = rx.data[r * d + j];
  }
  return nd(out, [...x.shape.slice(0, -1), dp + d]);
}

/** The first `w` columns of rows of width `W` starting at column `c0`. */
function columns(a: NDArray, W: number, c0: number, w: number, shape: number[]): NDArray {
  const rows = a.size / W;
  return nd(
    Array.from({ length: rows * w }, (_, i) => a.data[Math.floor(i / w) * W + c0 + (i % w)]),
    shape,
  );
}

Deno.test("ropeConcat: [pass | rope(x)] from slices of one tensor, one dispatch each way, vs float64 and finite differences", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
    T: fc.integer({ min: 1, max: 6 }),
    dp: fc.integer({ min: 1, max: 9 }),
    half: fc.integer({ min: 1, max: 5 }),
    offset: fc.integer({ min: 0, max: 5000 }),
    interleaved: fc.boolean(),
    factor: fc.constantFrom(1, 1.1386),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, T, dp, half, offset, interleaved, factor, seed }) => {
    const d = 2 * half, W = dp + d;
    const base = pair([...lead, T, W], seed, -3, 3, true);
    const outer = [...lead, T];
    const pos = offsetPositions([...outer, d], offset);
    const inv = invFreqRef(d, 10000);
    const o = { interleaved, attentionFactor: factor };
    const invT = mg.tensor(Float32Array.from(inv));
    const passT = base.t.slice(-1, 0, dp), xT = base.t.slice(-1, dp, W);
    let counts = new Map<string, number>();
    const count = (fn: () => void) => {
      counts = countDispatches(fn);
      return [...counts.values()].reduce((a, b) => a + b, 0);
    };

    let y!: mg.Tensor;
    assert.equal(count(() => (y = ropeConcat(passT, xT, offset, invT, o))), 1);
    const passR = columns(base.r, W, 0, dp, [...outer, dp]);
    const xR = columns(base.r, W, dp, d, [...outer, d]);
    await assertTensorClose(y, ropeConcatRef(passR, xR, pos, inv, o), ROT, "ropeConcat y");
    const gy = pair([...outer, W], seed + 1, -2, 2);
    // The gradients of both views reach the base: [g_pass | ropeVjp(g_x)]; ropeConcat's own
    // backward is one rotation (the rest is the two slices' backward).
    count(() => y.backward(gy.t));
    assert.equal(counts.get("rope_offset"), 1);
    const gPass = columns(gy.r, W, 0, dp, [...outer, dp]);
    const gX = ropeVjp(columns(gy.r, W, dp, d, [...outer, d]), pos, inv, o);
    const exact = nd(
      Array.from({ length: gy.r.size }, (_, i) => {
        const r = Math.floor(i / W), j = i % W;
        return j < dp ? gPass.data[r * dp + j] : gX.data[r * d + j - dp];
      }),
      gy.r.shape,
    );
    await assertTensorClose(base.t.grad!, exact, ROT, "ropeConcat d(base)");
    for (const t of [base.t, passT, xT, invT, y, gy.t]) t.dispose();
  }, 12);
  // The reference vjp (pass gradient = g's head, x gradient = ropeVjp of g's tail) vs central
  // differences of the float64 reference.
  const passR = nd(seededValues(3 * 4, 11, -2, 2), [3, 4]);
  const xR = nd(seededValues(3 * 6, 12, -2, 2), [3, 6]);
  const g = nd(seededValues(3 * 10, 13, -1, 1), [3, 10]);
  const pos = [0, 1, 2], inv = invFreqRef(6, 10000);
  const o = { interleaved: false, attentionFactor: 1.2 };
  const numX = numericGrad((v) => dot(ropeConcatRef(passR, v, pos, inv, o), g), xR);
  const numP = numericGrad((v) => dot(ropeConcatRef(v, xR, pos, inv, o), g), passR);
  const tol = { rtol: 1e-6, atol: 1e-8 };
  assertClose(ropeVjp(columns(g, 10, 4, 6, [3, 6]), pos, inv, o).data, numX, tol, "vjp x");
  assertClose(columns(g, 10, 0, 4, [3, 4]).data, numP, tol, "vjp pass");
});

Deno.test("ropeConcat: a pass of another tensor, x broadcast over heads (stride 0), positions tensor; errors", async () => {
  await gpu();
  const [B, H, T, dp, d] = [2, 3, 4, 5, 4];
  const pass = pair([B, H, T, dp], 21, -2, 2, true);
  const kr = pair([B, 1, T, d], 22, -2, 2, true);
  const posT = mg.tensor([3, 0, 9, 100], { dtype: "i32" });
  const inv = invFreqRef(d, 500);
  const invT = mg.tensor(Float32Array.from(inv));
  const o = { interleaved: true, attentionFactor: 1 };
  const xT = kr.t.expand([B, H, T, d]);
  const y = ropeConcat(pass.t, xT, posT, invT, o);
  const rows = B * H * T;
  const pos = Array.from({ length: rows }, (_, r) => [3, 0, 9, 100][r % T]);
  const xR = nd(
    Array.from({ length: rows * d }, (_, i) => {
      const r = Math.floor(i / d), b = Math.floor(r / (H * T)), t = r % T;
      return kr.r.data[(b * T + t) * d + (i % d)];
    }),
    [B, H, T, d],
  );
  await assertTensorClose(y, ropeConcatRef(pass.r, xR, pos, inv, o), ROT, "broadcast y");
  const gy = pair([B, H, T, dp + d], 23);
  y.backward(gy.t);
  await assertTensorClose(pass.t.grad!, columns(gy.r, dp + d, 0, dp, [B, H, T, dp]), ROT, "dpass");
  const gx = ropeVjp(columns(gy.r, dp + d, dp, d, [B, H, T, d]), pos, inv, o);
  const dkr = new Float64Array(B * T * d);
  for (let i = 0; i < rows * d; i++) {
    const r = Math.floor(i / d), b = Math.floor(r / (H * T)), t = r % T;
    dkr[(b * T + t) * d + (i % d)] += gx.data[i];
  }
  await assertTensorClose(kr.t.grad!, nd(dkr, [B, 1, T, d]), ROT, "d(k_rope) summed over heads");
  expectMgError(
    () => ropeConcat(mg.zeros([2, 3]), mg.zeros([3, 4]), 0, 10000),
    "ropeConcat",
    "pass",
  );
  expectMgError(
    () => ropeConcat(mg.zeros([3, 2]), mg.zeros([3, 3]), 0, 10000),
    "ropeConcat",
    "d even",
  );
  for (const t of [pass.t, kr.t, posT, invT, xT, y, gy.t]) t.dispose();
});
