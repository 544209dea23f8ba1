import * as mg from "../mod.ts";
import { attention, type AttentionOptions, setAttentionConfig } from "../ops/attention.ts";
import { compiledKernelCount } from "../core/kernel.ts";
import { assertClose, check, countDispatches, fc, gpu, seededValues } from "./util.ts";
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { dot, nd, type NDArray, numericGrad } from "./reference/ndarray.ts";
import { attentionRef, type AttentionRefOptions, attentionVjp } from "./reference/attention.ts";

// Tolerances (f32). Every output is a convex combination of v rows after an online softmax:
// the logits are dot products over D ≤ 24 (relative error ~D·2^-24 of Σ|q||k|·scale ≈ 1e-6
// here) and the weights a few exp/division roundings, so |out − ref| ≤ ~1e-6·max|v|; 2e-5
// absolute + 1e-4 relative leaves room for the per-block rescaling (one exp per key block).
// maxLogits is one dot product: 1e-5 relative + 1e-5 absolute of logits ≤ ~40.
// Gradients are sums over S (dk, dv) or S·D (dq) of products of such terms: 1e-4 relative,
// 5e-5 absolute (|g| ≤ 1, |dq| ~ 1).
const OUT = { rtol: 1e-4, atol: 2e-5 };
const MAXLOGIT = { rtol: 1e-5, atol: 1e-5 };
const GRAD = { rtol: 1e-4, atol: 5e-5 };
// Reference vjp vs float64 central differences (h = 1e-6: error ~1e-9 at these sizes).
const NUMERIC = { rtol: 1e-6, atol: 1e-7 };
// f16 inputs and outputs: one 2^-11 rounding of the stored output plus f16 inputs fed to the
// reference exactly as stored: 2e-3.
const F16 = { rtol: 2e-3, atol: 2e-3 };

/** One random attention problem. */
interface Case {
  B: number;
  H: number;
  Hk: number;
  Hv: number;
  T: number;
  S: number;
  Dq: number;
  Dv: number;
  causal: boolean;
  scale?: number;
  seed: number;
}

const divisorsOf = (n: number) =>
  Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);

/** Random cases: T, S in 1..maxLen (causal draws T ≤ S), H 1..4 with kv heads dividing H. */
function arbCase(maxLen: number, maxD: number, maxB = 2): fc.Arbitrary<Case> {
  return fc.record({
    B: fc.integer({ min: 1, max: maxB }),
    H: fc.integer({ min: 1, max: 4 }),
    kPick: fc.nat(),
    vPick: fc.nat(),
    a: fc.integer({ min: 1, max: maxLen }),
    c: fc.integer({ min: 1, max: maxLen }),
    Dq: fc.integer({ min: 1, max: maxD }),
    Dv: fc.integer({ min: 1, max: maxD }),
    causal: fc.boolean(),
    scale: fc.constantFrom(undefined, 0.3, -0.7),
    seed: fc.integer({ min: 1, max: 1 << 30 }),
  }).map(({ H, kPick, vPick, a, c, causal, ...rest }) => {
    const divs = divisorsOf(H);
    return {
      ...rest,
      H,
      Hk: divs[kPick % divs.length],
      Hv: divs[vPick % divs.length],
      T: causal ? Math.min(a, c) : a,
      S: causal ? Math.max(a, c) : c,
      causal,
    };
  });
}

function shapes(c: Case) {
  return {
    q: [c.B, c.H, c.T, c.Dq],
    k: [c.B, c.Hk, c.S, c.Dq],
    v: [c.B, c.Hv, c.S, c.Dv],
    o: [c.B, c.H, c.T, c.Dv],
  };
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Values of one case (q, k, v and an upstream gradient), in [-amp, amp). */
function values(c: Case, amp = 2) {
  const s = shapes(c);
  return {
    q: seededValues(size(s.q), c.seed, -amp, amp),
    k: seededValues(size(s.k), c.seed + 1, -amp, amp),
    v: seededValues(size(s.v), c.seed + 2, -2, 2),
    g: seededValues(size(s.o), c.seed + 3, -1, 1),
  };
}

function refOptions(c: Case): AttentionRefOptions {
  return { scale: c.scale ?? 1 / Math.sqrt(c.Dq), causal: c.causal };
}

function gpuOptions(c: Case): AttentionOptions {
  return { scale: c.scale, causal: c.causal };
}

const label = (c: Case) => JSON.stringify(c);

/** Asserts `fn` throws a MoongradError naming attention and including `includes`. */
function assertThrows(fn: () => unknown, includes: string): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected MoongradError, got ${e}`);
    if (!e.message.includes("attention") || !e.message.includes(includes)) {
      throw new Error(`error "${e.message}" does not name attention and "${includes}"`);
    }
    return;
  }
  throw new Error(`expected a MoongradError including "${includes}", nothing was thrown`);
}

function assert(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

async function forwardMatches(c: Case, amp: number, outTol = OUT, logitTol = MAXLOGIT) {
  const s = shapes(c);
  const val = values(c, amp);
  const q = mg.tensor(val.q, { shape: s.q });
  const k = mg.tensor(val.k, { shape: s.k });
  const v = mg.tensor(val.v, { shape: s.v });
  const { out, maxLogits } = attention(q, k, v, gpuOptions(c));
  const ref = attentionRef(nd(val.q, s.q), nd(val.k, s.k), nd(val.v, s.v), refOptions(c));
  if (out.shape.join() !== s.o.join()) throw new Error(`out shape [${out.shape}] != [${s.o}]`);
  assert(maxLogits.shape.join() === `${c.H}` && maxLogits.dtype === "f32", "maxLogits f32 [H]");
  assertClose(await out.data(), ref.out, outTol, `out ${label(c)}`);
  assertClose(await maxLogits.data(), ref.maxLogits, logitTol, `maxLogits ${label(c)}`);
  for (const t of [q, k, v, out, maxLogits]) t.dispose();
}

Deno.test("attention forward: out and maxLogits match float64 on random shapes (rtol 1e-4, atol 2e-5)", async () => {
  await gpu();
  await check(arbCase(40, 24), (c) => forwardMatches(c, 2), 25);
});

Deno.test("attention forward: decode (T < S), shared key head, head dims above one chunk (rtol 1e-4)", async () => {
  await gpu();
  const cases: Case[] = [
    { B: 1, H: 3, Hk: 1, Hv: 3, T: 1, S: 37, Dq: 24, Dv: 5, causal: true, seed: 11 },
    { B: 2, H: 2, Hk: 1, Hv: 1, T: 5, S: 40, Dq: 7, Dv: 24, causal: true, seed: 12 },
    { B: 1, H: 4, Hk: 2, Hv: 4, T: 33, S: 33, Dq: 40, Dv: 65, causal: true, seed: 13 },
    { B: 1, H: 1, Hk: 1, Hv: 1, T: 17, S: 3, Dq: 3, Dv: 2, causal: false, seed: 14 },
    { B: 1, H: 2, Hk: 2, Hv: 2, T: 1, S: 1, Dq: 1, Dv: 1, causal: true, seed: 15 },
  ];
  for (const c of cases) await forwardMatches(c, 2);
});

Deno.test("attention forward: large-magnitude q/k (logits up to ~±2000) stay finite and match", async () => {
  await gpu();
  // |q|, |k| ≤ 40 with D ≤ 12: logits up to ~2000 whose f32 dot products carry an absolute
  // error of about D·2^-24·Σ|q||k|·scale ≤ 12·6e-8·2000 ≈ 1.5e-3; a logit error δ moves the
  // softmax weights by ~δ relative, so |out − ref| ≤ ~2δ·max|v| (≤ 2): atol 1e-2. The max
  // logit itself: rtol 1e-5 (one dot product) + atol 2e-3.
  await check(arbCase(24, 12, 1), async (c) => {
    await forwardMatches(c, 40, { rtol: 1e-3, atol: 1e-2 }, { rtol: 1e-5, atol: 2e-3 });
  }, 10);
  // Logits near ±1e4 in one row: exact one-hot softmax, no NaN/Inf.
  const q = mg.tensor([100, 0], { shape: [1, 1, 1, 2] });
  const k = mg.tensor([100, 0, -100, 0, 99, 0], { shape: [1, 1, 3, 2] });
  const v = mg.tensor([1, 2, 3], { shape: [1, 1, 3, 1] });
  const { out, maxLogits } = attention(q, k, v, { scale: 1, causal: false });
  const o = await out.data();
  assertClose(o, [1 * 1 + 3 * Math.exp(-100)], { rtol: 1e-6, atol: 0 }, "one-hot row");
  assertClose(await maxLogits.data(), [1e4], { rtol: 0, atol: 0 }, "max logit 1e4");
  for (const t of [q, k, v, out, maxLogits]) t.dispose();
});

Deno.test("attention forward: strided (permuted, sliced) and f16 inputs (f16: 2e-3)", async () => {
  await gpu();
  const c: Case = { B: 2, H: 3, Hk: 3, Hv: 3, T: 21, S: 21, Dq: 10, Dv: 9, causal: true, seed: 21 };
  const s = shapes(c);
  const val = values(c);
  const ref = attentionRef(nd(val.q, s.q), nd(val.k, s.k), nd(val.v, s.v), refOptions(c));
  // q stored as [B, T, H, D] and permuted; k sliced out of a wider [B, H, S, 2D] buffer.
  const qs = mg.tensor(permuteFlat(val.q, s.q, [0, 2, 1, 3]), {
    shape: [c.B, c.T, c.H, c.Dq],
  });
  const q = qs.permute([0, 2, 1, 3]);
  const wide = new Float32Array(size(s.k) * 2);
  for (let r = 0; r < size(s.k) / c.Dq; r++) {
    wide.set(val.k.subarray(r * c.Dq, (r + 1) * c.Dq), r * 2 * c.Dq + c.Dq);
  }
  const kw = mg.tensor(wide, { shape: [c.B, c.Hk, c.S, 2 * c.Dq] });
  const k = kw.slice(3, c.Dq, 2 * c.Dq);
  const v = mg.tensor(val.v, { shape: s.v });
  assert(!q.isContiguous && !k.isContiguous, "views are strided");
  const r1 = attention(q, k, v, gpuOptions(c));
  assertClose(await r1.out.data(), ref.out, OUT, "strided out");
  assertClose(await r1.maxLogits.data(), ref.maxLogits, MAXLOGIT, "strided maxLogits");
  for (const t of [qs, q, kw, k, v, r1.out, r1.maxLogits]) t.dispose();

  if (!(await gpu()).f16) {
    console.log("adapter has no shader-f16: f16 attention not tested");
    return;
  }
  const qh = mg.tensor(val.q, { shape: s.q, dtype: "f16" });
  const kh = mg.tensor(val.k, { shape: s.k, dtype: "f16" });
  const vh = mg.tensor(val.v, { shape: s.v, dtype: "f16" });
  const refH = attentionRef(
    nd(await qh.data(), s.q),
    nd(await kh.data(), s.k),
    nd(await vh.data(), s.v),
    refOptions(c),
  );
  const r2 = attention(qh, kh, vh, gpuOptions(c));
  assert(r2.out.dtype === "f16" && r2.maxLogits.dtype === "f32", "f16 out, f32 maxLogits");
  assertClose(await r2.out.data(), refH.out, F16, "f16 out");
  assertClose(await r2.maxLogits.data(), refH.maxLogits, MAXLOGIT, "f16 maxLogits");
  for (const t of [qh, kh, vh, r2.out, r2.maxLogits]) t.dispose();
});

/** Row-major values of `shape` rearranged into the layout of `permute(axes)`. */
function permuteFlat(data: Float32Array, shape: number[], axes: number[]): Float32Array {
  const pshape = axes.map((a) => shape[a]);
  const out = new Float32Array(data.length);
  const strides = shape.map((_, i) => size(shape.slice(i + 1)));
  for (let i = 0; i < out.length; i++) {
    let rem = i;
    let src = 0;
    for (let d = pshape.length - 1; d >= 0; d--) {
      src += (rem % pshape[d]) * strides[axes[d]];
      rem = Math.floor(rem / pshape[d]);
    }
    out[i] = data[src];
  }
  return out;
}

async function backwardMatches(c: Case): Promise<void> {
  const s = shapes(c);
  const val = values(c);
  const q = mg.tensor(val.q, { shape: s.q }).requiresGrad_();
  const k = mg.tensor(val.k, { shape: s.k }).requiresGrad_();
  const v = mg.tensor(val.v, { shape: s.v }).requiresGrad_();
  const g = mg.tensor(val.g, { shape: s.o });
  const { out, maxLogits } = attention(q, k, v, gpuOptions(c));
  assert(out.requiresGrad && !maxLogits.requiresGrad, "out differentiable, maxLogits not");
  out.backward(g);
  const ref = attentionVjp(
    nd(val.q, s.q),
    nd(val.k, s.k),
    nd(val.v, s.v),
    nd(val.g, s.o),
    refOptions(c),
  );
  const grads: [string, mg.Tensor, NDArray][] = [
    ["dq", q.grad!, ref.dq],
    ["dk", k.grad!, ref.dk],
    ["dv", v.grad!, ref.dv],
  ];
  for (const [name, t, r] of grads) {
    if (t.shape.join() !== r.shape.join()) throw new Error(`${name} shape [${t.shape}]`);
    assertClose(await t.data(), r, GRAD, `${name} ${label(c)}`);
  }
  for (const t of [q, k, v]) t.zeroGrad();
  for (const t of [q, k, v, g, out, maxLogits]) t.dispose();
}

Deno.test("attention backward: dq, dk, dv match the float64 vjp (rtol 1e-4, atol 5e-5)", async () => {
  await gpu();
  await check(arbCase(40, 24), backwardMatches, 20);
  // Decode, shared key head summed over 4 heads, head dims spanning several chunks.
  await backwardMatches({
    B: 1,
    H: 4,
    Hk: 1,
    Hv: 2,
    T: 3,
    S: 38,
    Dq: 35,
    Dv: 17,
    causal: true,
    seed: 5,
  });
  // Head dims wider than one staged D-chunk (64 with the default tiles).
  await backwardMatches({
    B: 1,
    H: 2,
    Hk: 2,
    Hv: 1,
    T: 20,
    S: 20,
    Dq: 70,
    Dv: 66,
    causal: true,
    seed: 6,
  });
});

Deno.test("attention: other tile configurations (rows ≠ lanes, loads looping over tiles) match too", async () => {
  await gpu();
  for (const cfg of [{ rows: 4, lanes: 16 }, { rows: 8, lanes: 4 }, { rows: 3, lanes: 8 }]) {
    const prev = setAttentionConfig(cfg);
    try {
      await check(arbCase(20, 20), async (c) => {
        await forwardMatches(c, 2);
        await backwardMatches(c);
      }, 4);
    } finally {
      setAttentionConfig(prev);
    }
  }
});

Deno.test("attention backward: only the needed gradients; reference vjp vs central differences (float64, 1e-6)", async () => {
  await gpu();
  // Only v requires grad: q and k stay without .grad.
  const c: Case = { B: 1, H: 2, Hk: 1, Hv: 2, T: 6, S: 9, Dq: 4, Dv: 3, causal: true, seed: 31 };
  const s = shapes(c);
  const val = values(c);
  const q = mg.tensor(val.q, { shape: s.q });
  const k = mg.tensor(val.k, { shape: s.k });
  const v = mg.tensor(val.v, { shape: s.v }).requiresGrad_();
  const g = mg.tensor(val.g, { shape: s.o });
  const { out, maxLogits } = attention(q, k, v, gpuOptions(c));
  out.backward(g);
  assert(q.grad === null && k.grad === null, "no grads for q, k");
  const ref = attentionVjp(
    nd(val.q, s.q),
    nd(val.k, s.k),
    nd(val.v, s.v),
    nd(val.g, s.o),
    refOptions(c),
  );
  assertClose(await v.grad!.data(), ref.dv, GRAD, "dv alone");
  v.zeroGrad();
  for (const t of [q, k, v, g, out, maxLogits]) t.dispose();

  // The reference vjp against finite differences of Σ g ⊙ out on small random cases.
  await check(arbCase(6, 4, 2), (cc) => {
    const sh = shapes(cc);
    const vv = values(cc);
    const o = refOptions(cc);
    const [Q, K, V, G] = [nd(vv.q, sh.q), nd(vv.k, sh.k), nd(vv.v, sh.v), nd(vv.g, sh.o)];
    const r = attentionVjp(Q, K, V, G, o);
    const fq = (x: NDArray) => dot(attentionRef(x, K, V, o).out, G);
    const fk = (x: NDArray) => dot(attentionRef(Q, x, V, o).out, G);
    const fv = (x: NDArray) => dot(attentionRef(Q, K, x, o).out, G);
    assertClose(r.dq.data, numericGrad(fq, Q), NUMERIC, `numeric dq ${label(cc)}`);
    assertClose(r.dk.data, numericGrad(fk, K), NUMERIC, `numeric dk ${label(cc)}`);
    assertClose(r.dv.data, numericGrad(fv, V), NUMERIC, `numeric dv ${label(cc)}`);
    return Promise.resolve();
  }, 25);
});

Deno.test("attention causal mask is exact: changing a future key/value leaves earlier rows bit-identical", async () => {
  await gpu();
  await check(
    fc.tuple(arbCase(40, 20), fc.nat()),
    async ([c0, pick]) => {
      const c = { ...c0, causal: true, T: Math.max(c0.T, 2), S: Math.max(c0.S, c0.T, 2) };
      const s = shapes(c);
      const val = values(c);
      const off = c.S - c.T;
      // A key position j ≥ off + 1 so that at least query 0 does not see it.
      const j = off + 1 + (pick % (c.S - off - 1 || 1));
      if (j >= c.S) return;
      const k2 = val.k.slice();
      const v2 = val.v.slice();
      for (let r = 0; r < c.B * c.Hk; r++) {
        for (let d = 0; d < c.Dq; d++) k2[(r * c.S + j) * c.Dq + d] += 1.5;
      }
      for (let r = 0; r < c.B * c.Hv; r++) {
        for (let d = 0; d < c.Dv; d++) v2[(r * c.S + j) * c.Dv + d] -= 3;
      }
      const q = mg.tensor(val.q, { shape: s.q });
      const runs = [];
      for (const [kk, vv] of [[val.k, val.v], [k2, v2]]) {
        const k = mg.tensor(kk, { shape: s.k });
        const v = mg.tensor(vv, { shape: s.v });
        const r = attention(q, k, v, { causal: true });
        runs.push(await r.out.data());
        for (const t of [k, v, r.out, r.maxLogits]) t.dispose();
      }
      q.dispose();
      // Query i sees key j iff j ≤ i + off: rows i < j − off are untouched, row j − off changes.
      for (let bh = 0; bh < c.B * c.H; bh++) {
        for (let i = 0; i < c.T; i++) {
          const a = runs[0].subarray((bh * c.T + i) * c.Dv, (bh * c.T + i + 1) * c.Dv);
          const b = runs[1].subarray((bh * c.T + i) * c.Dv, (bh * c.T + i + 1) * c.Dv);
          const same = a.every((x, d) => Object.is(x, b[d]));
          if (i < j - off && !same) throw new Error(`row ${i} changed (key ${j}) ${label(c)}`);
          if (i === j - off && same) throw new Error(`row ${i} ignored key ${j} ${label(c)}`);
        }
      }
    },
    15,
  );
});

Deno.test("attention maxLogits: negative-only logits, masked pairs ignored, signed scale", async () => {
  await gpu();
  // q > 0 and k < 0 everywhere: every logit is negative; the max is the least negative one.
  const c: Case = { B: 2, H: 3, Hk: 1, Hv: 3, T: 9, S: 12, Dq: 5, Dv: 2, causal: true, seed: 41 };
  const s = shapes(c);
  const qv = seededValues(size(s.q), 1, 0.1, 1);
  const kv = seededValues(size(s.k), 2, -1, -0.1);
  const vv = seededValues(size(s.v), 3, -1, 1);
  const ref = attentionRef(nd(qv, s.q), nd(kv, s.k), nd(vv, s.v), refOptions(c));
  assert(ref.maxLogits.every((x) => x < 0), "reference maxima are negative");
  const q = mg.tensor(qv, { shape: s.q });
  const k = mg.tensor(kv, { shape: s.k });
  const v = mg.tensor(vv, { shape: s.v });
  const r = attention(q, k, v);
  assertClose(await r.maxLogits.data(), ref.maxLogits, MAXLOGIT, "negative maxLogits");
  // A negative scale flips every logit: the maximum becomes the most negative product's flip.
  const neg = attention(q, k, v, { scale: -0.5 });
  const refNeg = attentionRef(nd(qv, s.q), nd(kv, s.k), nd(vv, s.v), { scale: -0.5, causal: true });
  assertClose(await neg.maxLogits.data(), refNeg.maxLogits, MAXLOGIT, "scale -0.5");
  for (const t of [q, k, v, r.out, r.maxLogits, neg.out, neg.maxLogits]) t.dispose();

  // The last key has a huge logit with every query but only the last query sees it (T == S).
  const q1 = mg.tensor([1, 1, 1, 1], { shape: [1, 1, 4, 1] });
  const k1 = mg.tensor([-1, -2, 0.5, 50], { shape: [1, 1, 4, 1] });
  const v1 = mg.tensor([0, 0, 0, 0], { shape: [1, 1, 4, 1] });
  const causal = attention(q1, k1, v1, { scale: 1 });
  assertClose(await causal.maxLogits.data(), [50], { rtol: 0, atol: 0 }, "last row sees 50");
  const head = attention(q1.slice(2, 0, 3), k1.slice(2, 0, 3), v1.slice(2, 0, 3), { scale: 1 });
  assertClose(await head.maxLogits.data(), [0.5], { rtol: 0, atol: 0 }, "masked 50 ignored");
  const decode = attention(q1.slice(2, 0, 1), k1.slice(2, 0, 2), v1.slice(2, 0, 2), { scale: 1 });
  assertClose(await decode.maxLogits.data(), [-1], { rtol: 0, atol: 0 }, "decode max -1");
  for (const t of [q1, k1, v1, causal.out, causal.maxLogits, head.out, head.maxLogits]) t.dispose();
  for (const t of [decode.out, decode.maxLogits]) t.dispose();
});

Deno.test("attention: new T, S, B, H compile no new kernels; memory stays flat over fwd+bwd", async () => {
  await gpu();
  const step = (c: Case) => {
    const s = shapes(c);
    const val = values(c);
    const q = mg.tensor(val.q, { shape: s.q }).requiresGrad_();
    const k = mg.tensor(val.k, { shape: s.k }).requiresGrad_();
    const v = mg.tensor(val.v, { shape: s.v }).requiresGrad_();
    const g = mg.tensor(val.g, { shape: s.o });
    const { out, maxLogits } = attention(q, k, v);
    out.backward(g);
    for (const t of [q, k, v]) t.zeroGrad();
    for (const t of [q, k, v, g, out, maxLogits]) t.dispose();
  };
  const base: Case = { B: 1, H: 2, Hk: 1, Hv: 2, T: 7, S: 7, Dq: 12, Dv: 9, causal: true, seed: 1 };
  step(base);
  await mg.sync();
  const kernels = compiledKernelCount();
  const before = mg.memory().inUseBytes;
  step({ ...base, B: 2, H: 4, T: 19, S: 30, seed: 2 });
  step({ ...base, B: 3, H: 2, T: 33, S: 33, seed: 3 });
  await mg.sync();
  assert(compiledKernelCount() === kernels, "new sizes compiled new kernels");
  const after = mg.memory().inUseBytes;
  assert(after === before, `inUseBytes ${before} -> ${after}`);
});

Deno.test("attention rejects bad inputs with MoongradError naming the argument and shapes", async () => {
  await gpu();
  const t = (shape: number[], dtype: mg.DType = "f32") => mg.zeros(shape, { dtype });
  const q = t([1, 2, 4, 8]);
  const k = t([1, 2, 6, 8]);
  const v = t([1, 2, 6, 5]);
  const made: mg.Tensor[] = [q, k, v];
  const use = (x: mg.Tensor) => (made.push(x), x);
  assertThrows(() => attention(use(t([2, 4, 8])), k, v), "q must be 4-D");
  assertThrows(() => attention(q, use(t([1, 2, 6, 8, 1])), v), "k must be 4-D");
  assertThrows(() => attention(q, k, use(t([1, 2, 6, 5], "i32"))), "v has dtype i32");
  assertThrows(() => attention(q, use(t([2, 2, 6, 8])), v), "batch sizes differ");
  assertThrows(() => attention(q, use(t([1, 2, 6, 7])), v), "k's head dim 7 must equal q's 8");
  assertThrows(() => attention(q, k, use(t([1, 2, 5, 5]))), "v's sequence length 5");
  assertThrows(() => attention(use(t([1, 3, 4, 8])), k, use(t([1, 3, 6, 5]))), "k has 2 heads");
  assertThrows(() => attention(q, k, v, { kvHeads: 1 }), "kvHeads is 1 but k has 2 heads");
  assertThrows(() => attention(use(t([1, 2, 7, 8])), k, v), "T 7 > S 6");
  assertThrows(() => attention(q, k, v, { scale: NaN }), "scale must be a finite number");
  if (mg.deviceInfo().f16) {
    assertThrows(() => attention(q, use(t([1, 2, 6, 8], "f16")), v), "share one dtype");
  }
  assertThrows(() => attention(q, use(t([1, 2, 0, 8])), use(t([1, 2, 0, 5]))), "empty axis");
  // Non-causal attention accepts T > S.
  const r = attention(use(t([1, 2, 7, 8])), k, v, { causal: false });
  assert(r.out.shape.join() === "1,2,7,5", "non-causal T > S");
  made.push(r.out, r.maxLogits);
  for (const x of made) x.dispose();
});

Deno.test("the output is heads-inner: merging the heads is a view, values as the contiguous copy", async () => {
  await gpu();
  const [B, H, T, D] = [2, 3, 5, 8];
  const q = mg.tensor(seededValues(B * H * T * D, 31), { shape: [B, H, T, D] });
  const { out, maxLogits } = attention(q, q, q);
  let merged: mg.Tensor | null = null;
  const counts = countDispatches(() => {
    merged = out.permute([0, 2, 1, 3]).reshape([B, T, H * D]);
  });
  strictEqual(counts.size, 0, `merging the heads dispatched ${[...counts.keys()]}`);
  const copy = out.contiguous().permute([0, 2, 1, 3]).contiguous().reshape([B, T, H * D]);
  deepStrictEqual(await merged!.data(), await copy.data());
  for (const t of [q, out, maxLogits, merged!, copy]) t.dispose();
});

/** attentionPacked(q, kv, dqk) against attention on kv's two slices: values, dq and d(kv). */
async function packedMatchesSlices(
  B: number,
  H: number,
  Hk: number,
  T: number,
  dqk: number,
  dv: number,
) {
  const w = dqk + dv;
  const qv = seededValues(B * H * T * dqk, 31), kvv = seededValues(B * T * Hk * w, 32);
  const gv = seededValues(B * H * T * dv, 33);
  const run = async (packed: boolean) => {
    const q = mg.tensor(qv, { shape: [B, H, T, dqk] }).requiresGrad_();
    // kv as MLA makes it: the head view of a [B, T, Hk, w] projection output.
    const base = mg.tensor(kvv, { shape: [B, T, Hk, w] }).requiresGrad_();
    const kv = base.permute([0, 2, 1, 3]);
    const out = packed
      ? mg.attentionPacked(q, kv, dqk).out
      : attention(q, kv.slice(3, 0, dqk), kv.slice(3, dqk, w)).out;
    const counts = countDispatches(() =>
      out.mul(mg.tensor(gv, { shape: [B, H, T, dv] })).sum().backward()
    );
    const zeroSign = (x: Float32Array) => Array.from(x, (v) => v + 0); // −0 and +0 alike
    const res = [await out.data(), await q.grad!.data(), await base.grad!.data()].map((x) =>
      zeroSign(x as Float32Array)
    );
    return { res, counts };
  };
  const p = await run(true), s = await run(false);
  deepStrictEqual(p.res, s.res, `B${B} H${H} Hk${Hk} T${T} dqk${dqk} dv${dv}`);
  if (Hk === H) {
    strictEqual(p.counts.get("slice_grad") ?? 0, 0, JSON.stringify([...p.counts]));
    strictEqual(p.counts.get("concat") ?? 0, 0, JSON.stringify([...p.counts]));
  }
}

Deno.test("attentionPacked = attention on kv's slices, bit for bit; d(kv) in one launch (both kernel families)", async () => {
  await gpu();
  for (const cfg of [null, { rows: 8, lanes: 4 }]) {
    const prev = setAttentionConfig(cfg);
    try {
      await packedMatchesSlices(2, 4, 4, 9, 24, 16); // MLA's layout: every head its own kv
      await packedMatchesSlices(1, 4, 2, 7, 12, 8); // shared kv heads: dk, dv summed, then joined
    } finally {
      setAttentionConfig(prev);
    }
  }
  const q = mg.zeros([1, 1, 2, 4]), kv = mg.zeros([1, 1, 2, 6]);
  for (const bad of [0, 6, 2.5]) {
    try {
      mg.attentionPacked(q, kv, bad);
      throw new Error("no error");
    } catch (e) {
      strictEqual((e as Error).message.includes("dqk must be an integer in 1..5"), true, String(e));
    }
  }
});
