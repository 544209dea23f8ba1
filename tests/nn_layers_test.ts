/**
 * nn layers (Linear, Embedding, RMSNorm, SwiGLU MLP, interleaved RoPE) vs the float64
 * references of tests/reference/nn.ts: forward, and gradients of inputs and parameters.
 * Each reference vjp is itself checked against central differences in float64.
 *
 * Tolerances (f32): Linear / MLP are matmuls of <= 12 terms of magnitude <= ~3 (rtol 1e-4,
 * atol 1e-5, the matmul budget). RMSNorm sums <= 300 squares then rsqrt (2 ulp): forward
 * rtol 2e-5 + atol 2e-6; its dx subtracts two O(1) terms, so atol 2e-5. RoPE forward/backward
 * only rotate (one sin/cos after an exact range reduction of the same f32 angle the
 * reference uses): atol 1e-5 for |x| <= 3. f16 variants: rtol/atol 4e-3 (f16 has 11 bits).
 */
import * as mg from "../mod.ts";
import * as nn from "../nn/mod.ts";
import { setRmsNormRowLanes } from "../ops/rmsnorm.ts";
import { setCoLaunch } from "../core/runtime.ts";
import assert from "node:assert/strict";
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
  linearRef,
  linearVjp,
  mlpRef,
  mlpVjp,
  rmsNormRef,
  rmsNormVjp,
  ropeRef,
  ropeVjp,
} from "./reference/nn.ts";
import { embeddingRef, embeddingVjp } from "./reference/indexing.ts";

const MATMUL = { rtol: 1e-4, atol: 1e-5 };
const NORM = { rtol: 2e-5, atol: 2e-6 };
const NORM_GRAD = { rtol: 2e-5, atol: 2e-5 };
const ROT = { rtol: 0, atol: 1e-5 };
const F16 = { rtol: 4e-3, atol: 4e-3 };
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** A GPU tensor and its float64 copy from the same seeded values. */
function pair(shape: number[], seed: number, lo = -2, hi = 2, requiresGrad = false) {
  const v = seededValues(numel(shape), seed, lo, hi);
  return { t: mg.tensor(v, { shape, requiresGrad }), r: nd(v, shape) };
}

async function ndOf(t: mg.Tensor): Promise<NDArray> {
  return nd(await t.data(), t.shape);
}

// ---- reference vjps vs central differences (float64) --------------------------------------

Deno.test("reference vjps of linear, rmsNorm, rope and mlp match numericGrad (float64, 1e-6)", () => {
  const tol = { rtol: 1e-6, atol: 1e-7 };
  const r = (shape: number[], seed: number) =>
    nd(seededValues(numel(shape), seed, -1.5, 1.5), shape);
  // Linear
  const x = r([2, 3, 4], 1), w = r([5, 4], 2), b = r([5], 3), gy = r([2, 3, 5], 4);
  const lv = linearVjp(x, w, gy);
  assertClose(lv.dx.data, numericGrad((v) => dot(linearRef(v, w, b), gy), x), tol, "linear dx");
  assertClose(lv.dw.data, numericGrad((v) => dot(linearRef(x, v, b), gy), w), tol, "linear dw");
  assertClose(lv.db.data, numericGrad((v) => dot(linearRef(x, w, v), gy), b), tol, "linear db");
  // RMSNorm
  const g = r([4], 5), gn = r([2, 3, 4], 6);
  const rv = rmsNormVjp(x, g, 1e-5, gn);
  assertClose(rv.dx.data, numericGrad((v) => dot(rmsNormRef(v, g, 1e-5), gn), x), tol, "rms dx");
  assertClose(rv.dg.data, numericGrad((v) => dot(rmsNormRef(x, v, 1e-5), gn), g), tol, "rms dg");
  // RoPE
  const inv = invFreqRef(4, 10000);
  const pos = [0, 1, 7, 3, 100, 2];
  const gr = r([2, 3, 4], 7);
  const dr = ropeVjp(gr, pos, inv);
  assertClose(dr.data, numericGrad((v) => dot(ropeRef(v, pos, inv), gr), x), tol, "rope dx");
  // MLP
  const wg = r([6, 4], 8), wu = r([6, 4], 9), wd = r([4, 6], 10), gm = r([2, 3, 4], 11);
  const mv = mlpVjp(x, wg, wu, wd, gm);
  const f = (a: NDArray, bb: NDArray, c: NDArray, d: NDArray) => dot(mlpRef(a, bb, c, d), gm);
  assertClose(mv.dx.data, numericGrad((v) => f(v, wg, wu, wd), x), tol, "mlp dx");
  assertClose(mv.dwg.data, numericGrad((v) => f(x, v, wu, wd), wg), tol, "mlp dwg");
  assertClose(mv.dwu.data, numericGrad((v) => f(x, wg, v, wd), wu), tol, "mlp dwu");
  assertClose(mv.dwd.data, numericGrad((v) => f(x, wg, wu, v), wd), tol, "mlp dwd");
});

// ---- Linear -------------------------------------------------------------------------------

Deno.test("Linear forward and x/weight/bias gradients match the reference (rtol 1e-4)", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 0, maxLength: 3 }),
    nIn: fc.integer({ min: 1, max: 12 }),
    nOut: fc.integer({ min: 1, max: 11 }),
    bias: fc.boolean(),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, nIn, nOut, bias, seed }) => {
    const lin = new nn.Linear(nIn, nOut, { bias, seed, std: 0.7 });
    const x = pair([...lead, nIn], seed + 1, -2, 2, true);
    const gy = pair([...lead, nOut], seed + 2);
    const w = await ndOf(lin.weight);
    const b = lin.bias ? await ndOf(lin.bias) : undefined;
    const y = lin.forward(x.t);
    await assertTensorClose(y, linearRef(x.r, w, b), MATMUL, "linear y");
    y.backward(gy.t);
    const ref = linearVjp(x.r, w, gy.r);
    await assertTensorClose(x.t.grad!, ref.dx, MATMUL, "linear dx");
    await assertTensorClose(lin.weight.grad!, ref.dw, MATMUL, "linear dw");
    if (lin.bias) await assertTensorClose(lin.bias.grad!, ref.db, MATMUL, "linear db");
    else if ([...lin.namedParameters()].length !== 1) {
      throw new Error("bias-free Linear has a bias");
    }
    for (const t of [y, x.t, gy.t]) t.dispose();
    lin.dispose();
  }, 15);
});

// ---- Embedding ----------------------------------------------------------------------------

Deno.test("Embedding forward is an exact lookup and its weight gradient sums repeated ids", async () => {
  await gpu();
  const emb = new nn.Embedding(7, 5, { seed: 3, std: 1 });
  const ids = [[0, 3, 3], [6, 3, 1]];
  const idsT = mg.tensor(ids, { dtype: "i32" });
  const idsR = nd(ids.flat(), [2, 3]);
  const w = await ndOf(emb.weight);
  const y = emb.forward(idsT);
  await assertTensorClose(y, embeddingRef(w, idsR), { rtol: 0, atol: 0 }, "embedding y");
  const gy = pair([2, 3, 5], 9);
  y.backward(gy.t);
  await assertTensorClose(emb.weight.grad!, embeddingVjp(gy.r, [7, 5], idsR), {
    rtol: 1e-6,
    atol: 1e-6,
  }, "embedding dw");
  for (const t of [y, idsT, gy.t]) t.dispose();
  emb.dispose();
});

// ---- RMSNorm ------------------------------------------------------------------------------

Deno.test("rmsNorm forward/backward match the reference: short and long rows, many row chunks, one thread, 8 and 128 lanes per row", async () => {
  await gpu();
  for (const lanes of [1, 8, 128]) {
    const previous = setRmsNormRowLanes(lanes);
    try {
      await rmsNormVsReference();
    } finally {
      setRmsNormRowLanes(previous);
    }
  }
});

Deno.test("rmsNorm backward: CPU adapters take one thread per row from 64 rows", async () => {
  const info = await gpu();
  // Co-launching would record a pairable kernel later, merged, under a joint name.
  const coLaunch = setCoLaunch(false);
  try {
    for (const [rows, thread] of [[63, false], [64, info.isFallbackAdapter]] as const) {
      const x = mg.tensor(seededValues(rows * 64, 5, -1, 1), {
        shape: [rows, 64],
        requiresGrad: true,
      });
      const g = mg.tensor(seededValues(64, 6, 0.5, 1.5), { requiresGrad: true });
      const y = nn.rmsNorm(x, g, 1e-6);
      const dy = mg.tensor(seededValues(rows * 64, 7, -1, 1), { shape: [rows, 64] });
      const counts = countDispatches(() => y.backward(dy));
      const rowKernels = [...counts.keys()].filter((k) => k.startsWith("rms_norm_dx"));
      const want = `rms_norm_dx_dg_vec4_${thread ? "thread" : "rows"}`;
      assert.deepEqual(rowKernels, [want], `${rows} rows`);
      for (const t of [x, g, y, dy]) t.dispose();
    }
    await mg.sync();
  } finally {
    setCoLaunch(coLaunch);
  }
});

async function rmsNormVsReference() {
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 0, maxLength: 3 }),
    d: fc.oneof(fc.integer({ min: 1, max: 32 }), fc.integer({ min: 33, max: 300 })),
    eps: fc.constantFrom(1e-6, 1e-5, 0.1),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, d, eps, seed }) => {
    const x = pair([...lead, d], seed, -3, 3, true);
    const g = pair([d], seed + 1, 0.5, 1.5, true);
    const dy = pair([...lead, d], seed + 2);
    const y = nn.rmsNorm(x.t, g.t, eps);
    await assertTensorClose(y, rmsNormRef(x.r, g.r, eps), NORM, "rms y");
    y.backward(dy.t);
    const ref = rmsNormVjp(x.r, g.r, eps, dy.r);
    await assertTensorClose(x.t.grad!, ref.dx, NORM_GRAD, "rms dx");
    // dg sums up to ~700 rows: the long-reduction budget.
    await assertTensorClose(g.t.grad!, ref.dg, { rtol: 1e-4, atol: 1e-4 }, "rms dg");
    for (const t of [y, x.t, g.t, dy.t]) t.dispose();
  }, 12);
}

Deno.test("rmsNorm backward: 1 dispatch for dx + dg, the chunked dg above 2048 rows, dx or dg alone", async () => {
  await gpu();
  const count = (fn: () => void) => [...countDispatches(fn).values()].reduce((a, b) => a + b, 0);

  // [rows, d], x and g requiring grad or not: dx and dg in one dispatch, chunked (3), dx only,
  // dg only (row-chunk partials + their sum).
  const cases: [number, number, boolean, boolean, number][] = [
    [256, 40, true, true, 1],
    [100, 20, true, true, 1],
    [2100, 5, true, true, 3],
    [70, 40, true, false, 1],
    [70, 7, false, true, 2],
  ];
  for (const [rows, d, gx, gg, want] of cases) {
    const x = pair([rows, d], rows + d, -3, 3, gx);
    const g = pair([d], d, 0.5, 1.5, gg);
    const dy = pair([rows, d], 7 * rows);
    const y = nn.rmsNorm(x.t, g.t, 1e-5);
    assert.equal(count(() => y.backward(dy.t)), want, `dispatches for ${rows}×${d}`);
    const ref = rmsNormVjp(x.r, g.r, 1e-5, dy.r);
    if (gx) await assertTensorClose(x.t.grad!, ref.dx, NORM_GRAD, `dx ${rows}×${d}`);
    else assert.equal(x.t.grad, null);
    if (gg) await assertTensorClose(g.t.grad!, ref.dg, { rtol: 1e-4, atol: 1e-4 }, `dg ${rows}`);
    else assert.equal(g.t.grad, null);
    for (const t of [y, x.t, g.t, dy.t]) t.dispose();
  }
});

Deno.test("rmsNorm reads strided inputs in place (slice of a projection, transposed rows)", async () => {
  await gpu();
  // A slice along the last axis (rows merge with one stride): MLA's c = ckv[..., :r_kv].
  const wide = pair([3, 4, 50], 5, -2, 2, true);
  const c = wide.t.slice(2, 0, 40);
  const g = pair([40], 6, 0.5, 1.5, true);
  const y = nn.rmsNorm(c, g.t, 1e-6);
  const cr = nd(
    Array.from({ length: 12 * 40 }, (_, i) => wide.r.data[Math.floor(i / 40) * 50 + (i % 40)]),
    [3, 4, 40],
  );
  await assertTensorClose(y, rmsNormRef(cr, g.r, 1e-6), NORM, "sliced y");
  const dy = pair([3, 4, 40], 7);
  y.backward(dy.t);
  const ref = rmsNormVjp(cr, g.r, 1e-6, dy.r);
  const dwide = await wide.t.grad!.data();
  const dsl = Array.from({ length: 12 * 40 }, (_, i) => dwide[Math.floor(i / 40) * 50 + (i % 40)]);
  assertClose(dsl, ref.dx, NORM_GRAD, "sliced dx");
  for (let i = 0; i < 12; i++) {
    for (let j = 40; j < 50; j++) {
      if (dwide[i * 50 + j] !== 0) throw new Error("gradient leaked outside the slice");
    }
  }
  await assertTensorClose(g.t.grad!, ref.dg, { rtol: 1e-4, atol: 1e-5 }, "sliced dg");
  // Outer axes that do not merge (a transposed view) and a broadcast upstream gradient.
  const base = pair([5, 3, 36], 8, -2, 2);
  const tr = base.t.transpose(0, 1); // [3, 5, 36], outer strides not mergeable
  const g2 = pair([36], 9, 0.5, 1.5);
  const y2 = nn.rmsNorm(tr, g2.t, 1e-5);
  const trR = nd(
    Array.from({ length: 3 * 5 * 36 }, (_, i) => {
      const a = Math.floor(i / 180), b = Math.floor(i / 36) % 5, j = i % 36;
      return base.r.data[b * 108 + a * 36 + j];
    }),
    [3, 5, 36],
  );
  await assertTensorClose(y2, rmsNormRef(trR, g2.r, 1e-5), NORM, "transposed y");
  for (const t of [y, c, wide.t, g.t, dy.t, base.t, tr, g2.t, y2]) t.dispose();
});

Deno.test("RMSNorm layer: gain starts at ones, eps is used, f16 matches within 4e-3", async () => {
  const info = await gpu();
  const norm = new nn.RMSNorm(24, { eps: 0.5 });
  if (Array.from(await norm.weight.data()).some((v) => v !== 1)) throw new Error("gain not ones");
  const x = pair([2, 24], 3, -1, 1);
  await assertTensorClose(
    norm.forward(x.t).keep(),
    rmsNormRef(x.r, nd(new Array(24).fill(1), [24]), 0.5),
    NORM,
    "eps 0.5",
  );
  norm.dispose();
  if (info.f16) {
    const xh = x.t.cast("f16");
    const gh = mg.ones([24], { dtype: "f16" });
    const yh = nn.rmsNorm(xh, gh, 1e-6);
    if (yh.dtype !== "f16") throw new Error("f16 in, f16 out expected");
    await assertTensorClose(
      yh,
      rmsNormRef(x.r, nd(new Array(24).fill(1), [24]), 1e-6),
      F16,
      "f16 y",
    );
    for (const t of [xh, gh, yh]) t.dispose();
  }
  x.t.dispose();
});

// ---- RoPE ---------------------------------------------------------------------------------

/** Positions of each row of x [..., T, d] for an offset (row t of T has offset + t). */
function offsetPositions(shape: readonly number[], offset: number): number[] {
  const T = shape[shape.length - 2];
  return Array.from({ length: numel(shape.slice(0, -1)) }, (_, r) => offset + (r % T));
}

Deno.test("applyRope (interleaved pairs) forward and backward match the reference, offset positions", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
    T: fc.integer({ min: 1, max: 9 }),
    half: fc.integer({ min: 1, max: 8 }),
    offset: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 20000 })),
    theta: fc.constantFrom(10000, 50000, 7.5),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, T, half, offset, theta, seed }) => {
    const shape = [...lead, T, 2 * half];
    const x = pair(shape, seed, -3, 3, true);
    const pos = offsetPositions(shape, offset);
    const inv = invFreqRef(2 * half, theta);
    const y = nn.applyRope(x.t, offset, theta);
    await assertTensorClose(y, ropeRef(x.r, pos, inv), ROT, "rope y");
    const gy = pair(shape, seed + 1, -3, 3);
    y.backward(gy.t);
    await assertTensorClose(x.t.grad!, ropeVjp(gy.r, pos, inv), ROT, "rope dx");
    for (const t of [x.t, y, gy.t]) t.dispose();
  }, 20);
});

Deno.test("rope with an i32 positions tensor (broadcast [T] and per-batch [B, T]) and a strided q view", async () => {
  await gpu();
  const B = 2, T = 5, H = 3, d = 8;
  const theta = 50000;
  const inv = invFreqRef(d, theta);
  const rope = new nn.RotaryEmbedding(d, { theta });
  // q laid out [B, T, H, d] (as a projection gives it), rotated as [B, H, T, d] (a view).
  const q = pair([B, T, H, d], 1, -2, 2, true);
  const qv = q.t.transpose(1, 2);
  const posT = [3, 9, 4000, 0, 17];
  const posTensor = mg.tensor(posT, { dtype: "i32" });
  const y = rope.forward(qv, posTensor);
  const qvR = nd(
    Array.from({ length: B * H * T * d }, (_, i) => {
      const b = Math.floor(i / (H * T * d)), h = Math.floor(i / (T * d)) % H;
      const t = Math.floor(i / d) % T, j = i % d;
      return q.r.data[((b * T + t) * H + h) * d + j];
    }),
    [B, H, T, d],
  );
  const rowPos = Array.from({ length: B * H * T }, (_, r) => posT[r % T]);
  await assertTensorClose(y, ropeRef(qvR, rowPos, inv), ROT, "rope [T] positions");
  const gy = pair([B, H, T, d], 2);
  y.backward(gy.t);
  const dq = await q.t.grad!.data();
  const dref = ropeVjp(gy.r, rowPos, inv);
  const dqv = Array.from({ length: B * H * T * d }, (_, i) => {
    const b = Math.floor(i / (H * T * d)), h = Math.floor(i / (T * d)) % H;
    const t = Math.floor(i / d) % T, j = i % d;
    return dq[((b * T + t) * H + h) * d + j];
  });
  assertClose(dqv, dref, ROT, "rope dq through the transposed view");
  // Per-batch positions [B, T] on the shared k_rope [B, T, d].
  const k = pair([B, T, d], 3);
  const pbt = [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]];
  const pbtT = mg.tensor(pbt, { dtype: "i32" });
  const yk = nn.applyRope(k.t, pbtT, theta);
  await assertTensorClose(yk, ropeRef(k.r, pbt.flat(), inv), ROT, "rope [B, T] positions");
  // Offset form == tensor form.
  const a = nn.applyRope(k.t, 10, theta);
  const b = nn.applyRope(k.t, mg.tensor([10, 11, 12, 13, 14], { dtype: "i32" }).keep(), theta);
  assertClose(await a.data(), await b.data(), { rtol: 0, atol: 0 }, "offset == tensor");
  for (const t of [q.t, qv, posTensor, y, gy.t, k.t, pbtT, yk, a, b]) t.dispose();
  rope.dispose();
});

Deno.test("rope f16 matches within 4e-3; the rotation preserves pair norms", async () => {
  const info = await gpu();
  const x = pair([4, 16], 11, -2, 2);
  const y = nn.applyRope(x.t, 1234, 10000);
  const yv = await y.data();
  for (let i = 0; i < 32; i++) {
    const n0 = Math.hypot(x.r.data[2 * i], x.r.data[2 * i + 1]);
    const n1 = Math.hypot(yv[2 * i], yv[2 * i + 1]);
    if (Math.abs(n0 - n1) > 1e-5) throw new Error(`pair ${i}: norm ${n1} != ${n0}`);
  }
  if (info.f16) {
    const xh = x.t.cast("f16");
    const yh = nn.applyRope(xh, 1234, 10000);
    await assertTensorClose(
      yh,
      ropeRef(x.r, offsetPositions([4, 16], 1234), invFreqRef(16, 10000)),
      F16,
      "rope f16",
    );
    xh.dispose();
    yh.dispose();
  }
  x.t.dispose();
  y.dispose();
});

// ---- MLP ----------------------------------------------------------------------------------

Deno.test("MLP (SwiGLU) forward and all gradients match the reference (rtol 1e-4)", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 2 }),
    hidden: fc.integer({ min: 1, max: 10 }),
    inter: fc.integer({ min: 1, max: 12 }),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ lead, hidden, inter, seed }) => {
    const mlp = new nn.MLP(hidden, inter, { seed, std: 0.5 });
    const names = [...mlp.namedParameters()].map(([n]) => n).join(",");
    if (names !== "gate_proj.weight,up_proj.weight,down_proj.weight") throw new Error(names);
    const x = pair([...lead, hidden], seed + 1, -2, 2, true);
    const wg = await ndOf(mlp.gateProj.weight);
    const wu = await ndOf(mlp.upProj.weight);
    const wd = await ndOf(mlp.downProj.weight);
    const y = mlp.forward(x.t);
    await assertTensorClose(y, mlpRef(x.r, wg, wu, wd), MATMUL, "mlp y");
    const gy = pair([...lead, hidden], seed + 2);
    y.backward(gy.t);
    const ref = mlpVjp(x.r, wg, wu, wd, gy.r);
    await assertTensorClose(x.t.grad!, ref.dx, MATMUL, "mlp dx");
    await assertTensorClose(mlp.gateProj.weight.grad!, ref.dwg, MATMUL, "mlp dgate");
    await assertTensorClose(mlp.upProj.weight.grad!, ref.dwu, MATMUL, "mlp dup");
    await assertTensorClose(mlp.downProj.weight.grad!, ref.dwd, MATMUL, "mlp ddown");
    for (const t of [x.t, y, gy.t]) t.dispose();
    mlp.dispose();
  }, 12);
});

// ---- errors and memory --------------------------------------------------------------------

Deno.test("layers reject bad input with a MoongradError naming the op", async () => {
  await gpu();
  const lin = new nn.Linear(4, 3);
  const x = mg.zeros([2, 5]);
  const xi = mg.zeros([2, 4], { dtype: "i32" });
  const w3 = mg.ones([3]);
  const x8 = mg.zeros([2, 8]);
  const xo = mg.zeros([2, 3, 7]);
  expectMgError(() => lin.forward(x), "Linear.forward");
  expectMgError(() => lin.forward(xi), "must be float");
  expectMgError(() => nn.rmsNorm(x8, w3), "rmsNorm");
  expectMgError(() => nn.rmsNorm(x8, mg.ones([8]), -1), "eps");
  expectMgError(() => nn.applyRope(xo, 0, 10000), "d even");
  expectMgError(() => nn.applyRope(x8, mg.zeros([2]), 10000), "i32");
  expectMgError(() => nn.applyRope(x8, mg.zeros([3], { dtype: "i32" }), 10000), "broadcast");
  expectMgError(() => nn.applyRope(x8, 0, -1), "theta");
  expectMgError(() => new nn.Linear(0, 3), "inFeatures");
  expectMgError(() => new nn.RMSNorm(4, { eps: NaN }), "eps");
  for (const t of [x, xi, w3, x8, xo]) t.dispose();
  lin.dispose();
});

Deno.test("forward+backward of the layers leaves GPU memory flat", async () => {
  await gpu();
  const mlp = new nn.MLP(16, 24, { seed: 1 });
  const norm = new nn.RMSNorm(16);
  const run = () => {
    mg.scope(() => {
      const x = mg.randn([2, 5, 16], { seed: 2, requiresGrad: true });
      const h = norm.forward(x);
      const r = nn.applyRope(h, 3, 10000);
      const y = mlp.forward(r);
      y.sum().backward();
      x.zeroGrad();
    });
    mlp.zeroGrad();
    norm.zeroGrad();
  };
  run();
  await mg.sync();
  const before = mg.memory();
  for (let i = 0; i < 3; i++) run();
  await mg.sync();
  const after = mg.memory();
  if (after.inUseBytes !== before.inUseBytes || after.liveTensors !== before.liveTensors) {
    throw new Error(`leak: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  }
  mlp.dispose();
  norm.dispose();
});
