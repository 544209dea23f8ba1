/**
 * MLA's fused RoPE ops (ops/rope_mla.ts): `ropeTail` (queries) and `ropeInsertShared` (keys and
 * values), forward and backward vs float64 references built from tests/reference/nn.ts's
 * `ropeRef` / `ropeVjp`, the reference vjps vs central finite differences, both pair layouts,
 * an attention factor, offsets and i32 position tensors, strided (permuted head view) inputs,
 * f16 where the adapter has it, errors, and the dispatch counts: one kernel each way, and the
 * gradients of permuted inputs land as views of the projections' layout (no copy behind them).
 *
 * Tolerance: the ops rotate O(1) values by one f32 sin/cos (ROT = 1e-5 absolute, as the rope
 * tests); the key's rope gradient sums H rotated values (H ≤ 3 here: 3e-5). f16: 2e-2 (values
 * up to 2 carry 2^-10 relative rounding, the head sum three of them).
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { ropeInsertShared, ropeTail } from "../ops/rope_mla.ts";
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
import { invFreqRef, ropeRef, ropeVjp } from "./reference/nn.ts";

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const ROT = { rtol: 0, atol: 1e-5 };
const SUM = { rtol: 0, atol: 3e-5 };

type Opts = { interleaved: boolean; attentionFactor: number };

/** Row-major data of `shape` permuted by `axes` (out axis i = in axis axes[i]). */
function permuteData(data: ArrayLike<number>, shape: readonly number[], axes: number[]) {
  const oshape = axes.map((a) => shape[a]);
  const istr = shape.map((_, i) => numel(shape.slice(i + 1)));
  const out = new Float64Array(data.length);
  for (let o = 0; o < out.length; o++) {
    let rem = o, src = 0;
    for (let d = oshape.length - 1; d >= 0; d--) {
      src += (rem % oshape[d]) * istr[axes[d]];
      rem = Math.floor(rem / oshape[d]);
    }
    out[o] = data[src];
  }
  return { data: out, shape: oshape };
}

/** Columns c0..c0+w−1 of the rows of a (last axis W). */
function cols(a: NDArray, c0: number, w: number): NDArray {
  const W = a.shape[a.shape.length - 1], rows = numel(a.shape.slice(0, -1));
  const v = Array.from(
    { length: rows * w },
    (_, i) => a.data[Math.floor(i / w) * W + c0 + (i % w)],
  );
  return nd(v, [...a.shape.slice(0, -1), w]);
}

/** Row-wise concat of row blocks with the same row count. */
function catRows(parts: NDArray[]): NDArray {
  const ws = parts.map((p) => p.shape[p.shape.length - 1]);
  const W = ws.reduce((a, b) => a + b, 0), rows = numel(parts[0].shape.slice(0, -1));
  const out = new Float64Array(rows * W);
  for (let r = 0; r < rows; r++) {
    let c = 0;
    parts.forEach((p, k) => {
      for (let j = 0; j < ws[k]; j++) out[r * W + c + j] = p.data[r * ws[k] + j];
      c += ws[k];
    });
  }
  return nd(out, [...parts[0].shape.slice(0, -1), W]);
}

function ropeTailRef(x: NDArray, dp: number, pos: number[], inv: number[], o: Opts): NDArray {
  const W = x.shape[x.shape.length - 1];
  return catRows([cols(x, 0, dp), ropeRef(cols(x, dp, W - dp), pos, inv, 1, o)]);
}

function ropeTailVjp(g: NDArray, dp: number, pos: number[], inv: number[], o: Opts): NDArray {
  const W = g.shape[g.shape.length - 1];
  return catRows([cols(g, 0, dp), ropeVjp(cols(g, dp, W - dp), pos, inv, o)]);
}

/** x [L, H, T, W] (L = product of lead axes), s [L, T, Ws]: the head-broadcast rotated block. */
function sharedRows(s: NDArray, start: number, H: number): NDArray {
  const [L, T, Ws] = s.shape, d = Ws - start;
  const v = new Float64Array(L * H * T * d);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < d; j++) {
          v[((l * H + h) * T + t) * d + j] = s.data[(l * T + t) * Ws + start + j];
        }
      }
    }
  }
  return nd(v, [L, H, T, d]);
}

function insertRef(
  x: NDArray,
  at: number,
  s: NDArray,
  start: number,
  pos: number[],
  inv: number[],
  o: Opts,
) {
  const W = x.shape[3];
  const rot = ropeRef(sharedRows(s, start, x.shape[1]), pos, inv, 1, o);
  return catRows([cols(x, 0, at), rot, cols(x, at, W - at)]);
}

function insertVjp(
  g: NDArray,
  at: number,
  sShape: number[],
  start: number,
  H: number,
  pos: number[],
  inv: number[],
  o: Opts,
) {
  const [L, T, Ws] = sShape, d = Ws - start, Wg = g.shape[3];
  const dx = catRows([cols(g, 0, at), cols(g, at + d, Wg - at - d)]);
  const gr = ropeVjp(cols(g, at, d), pos, inv, o);
  const ds = new Float64Array(L * T * Ws);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < d; j++) {
          ds[(l * T + t) * Ws + start + j] += gr.data[((l * H + h) * T + t) * d + j];
        }
      }
    }
  }
  return { dx, ds: nd(ds, sShape) };
}

/** Sum of the dispatches of fn, and the counts by kernel. */
function dispatches(fn: () => void): { total: number; by: Map<string, number> } {
  const by = countDispatches(fn);
  return { total: [...by.values()].reduce((a, b) => a + b, 0), by };
}

Deno.test("ropeTail: [x[..., :dp] | rope(x[..., dp:])] from a permuted head view, one dispatch each way, gradient laid out like the projection", async () => {
  await gpu();
  const arb = fc.record({
    B: fc.integer({ min: 1, max: 2 }),
    H: fc.integer({ min: 1, max: 3 }),
    T: fc.integer({ min: 1, max: 5 }),
    dp: fc.integer({ min: 0, max: 7 }),
    half: fc.integer({ min: 1, max: 4 }),
    offset: fc.integer({ min: 0, max: 3000 }),
    byTensor: fc.boolean(),
    interleaved: fc.boolean(),
    factor: fc.constantFrom(1, 1.1386),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ B, H, T, dp, half, offset, byTensor, interleaved, factor, seed }) => {
    const W = dp + 2 * half;
    const o = { interleaved, attentionFactor: factor };
    const inv = invFreqRef(2 * half, 10000);
    const invT = mg.tensor(Float32Array.from(inv));
    // The projection output [B, T, H·W] and its head view [B, H, T, W] (as MLA's qh).
    const pv = seededValues(B * T * H * W, seed, -2, 2);
    const proj = mg.tensor(pv, { shape: [B, T, H * W], requiresGrad: true });
    const xr = permuteData(pv, [B, T, H, W], [0, 2, 1, 3]);
    const x = nd(xr.data, xr.shape);
    const tpos = Array.from({ length: T }, (_, t) => (t * 37 + offset) % 5000);
    const posT = byTensor ? mg.tensor(tpos, { shape: [T], dtype: "i32" }) : null;
    const pos = Array.from(
      { length: B * H * T },
      (_, r) => byTensor ? tpos[r % T] : offset + (r % T),
    );
    const qh = proj.reshape([B, T, H, W]).permute([0, 2, 1, 3]);
    let y!: mg.Tensor;
    const f = dispatches(() => (y = ropeTail(qh, dp, posT ?? offset, invT, o)));
    assert.equal(f.total, 1, JSON.stringify([...f.by]));
    await assertTensorClose(y, ropeTailRef(x, dp, pos, inv, o), ROT, "ropeTail y");
    const gv = seededValues(B * H * T * W, seed + 1, -1, 1);
    const g = mg.tensor(gv, { shape: [B, H, T, W] });
    const b = dispatches(() => y.backward(g));
    assert.equal(b.total, 1, `backward: ${JSON.stringify([...b.by])}`);
    assert.ok(proj.grad!.isContiguous, "the gradient reaches q_b's layout as a view");
    const dx = ropeTailVjp(nd(gv, [B, H, T, W]), dp, pos, inv, o);
    const back = permuteData(dx.data, [B, H, T, W], [0, 2, 1, 3]);
    await assertTensorClose(proj.grad!, nd(back.data, [B, T, H * W]), ROT, "ropeTail d(proj)");
    for (const t of [invT, proj, qh, y, g, posT]) t?.dispose();
  }, 14);
});

Deno.test("ropeTail: contiguous and sliced inputs, positions [B, T], reference vjp vs finite differences, f16, errors", async () => {
  const info = await gpu();
  const o = { interleaved: false, attentionFactor: 1.2 };
  const inv = invFreqRef(6, 500);
  const invT = mg.tensor(Float32Array.from(inv));
  // A column slice of a wider tensor (strided rows), positions per (batch, token).
  const wide = seededValues(2 * 3 * 12, 5, -2, 2);
  const base = mg.tensor(wide, { shape: [2, 3, 12], requiresGrad: true });
  const x = base.slice(2, 2, 12); // [2, 3, 10]: dp 4 + d 6
  const xr = cols(nd(wide, [2, 3, 12]), 2, 10);
  const pv = [4, 0, 9, 1, 7, 100];
  const posT = mg.tensor(pv, { shape: [2, 3], dtype: "i32" });
  const y = ropeTail(x, 4, posT, invT, o);
  await assertTensorClose(y, ropeTailRef(xr, 4, pv, inv, o), ROT, "sliced y");
  const gv = seededValues(60, 6, -1, 1);
  const g = mg.tensor(gv, { shape: [2, 3, 10] });
  y.backward(g);
  const dx = ropeTailVjp(nd(gv, [2, 3, 10]), 4, pv, inv, o);
  const full = catRows([nd(new Float64Array(6 * 2), [2, 3, 2]), dx]);
  await assertTensorClose(base.grad!, full, ROT, "sliced d(base)");
  // Contiguous x, dp 0 (all rotated) equals rope.
  const c = mg.tensor(seededValues(2 * 4 * 6, 7, -2, 2), { shape: [2, 4, 6] });
  const all = ropeTail(c, 0, 3, invT, o);
  const plain = mg.nn.rope(c, 3, invT, o);
  assert.deepEqual(await all.data(), await plain.data());
  // The reference vjp vs central differences of the float64 reference.
  const xs = nd(seededValues(3 * 8, 8, -2, 2), [3, 8]);
  const gs = nd(seededValues(3 * 8, 9, -1, 1), [3, 8]);
  const inv6 = invFreqRef(6, 10000), p3 = [0, 5, 2];
  const num = numericGrad((v) => dot(ropeTailRef(v, 2, p3, inv6, o), gs), xs);
  assertClose(ropeTailVjp(gs, 2, p3, inv6, o).data, num, { rtol: 1e-6, atol: 1e-8 }, "vjp");
  if (info.f16) {
    const h = mg.tensor(wide, { shape: [2, 3, 12], dtype: "f16", requiresGrad: true });
    const hx = h.slice(2, 2, 12);
    const hy = ropeTail(hx, 4, posT, invT, o);
    assert.equal(hy.dtype, "f16");
    const F16 = { rtol: 0, atol: 2e-2 };
    await assertTensorClose(hy.cast("f32"), ropeTailRef(xr, 4, pv, inv, o), F16, "f16 y");
    hy.backward(g.cast("f16"));
    await assertTensorClose(h.grad!.cast("f32"), full, F16, "f16 d(base)");
    for (const t of [h, hx, hy]) t.dispose();
  } else console.log("adapter has no shader-f16: f16 ropeTail not tested");
  expectMgError(() => ropeTail(mg.zeros([3, 7]), 2, 0, 10000), "ropeTail", "W − dp even");
  expectMgError(() => ropeTail(mg.zeros([3, 8]), 9, 0, 10000), "ropeTail", "dp");
  expectMgError(() => ropeTail(mg.zeros([8]), 2, 0, 10000), "ropeTail", "[..., T, W]");
  for (const t of [invT, base, x, posT, y, g, c, all, plain]) t.dispose();
});

Deno.test("ropeInsertShared: [x[..., :at] | rope(shared[..., start:]) | x[..., at:]] per head, one dispatch each way, vs float64", async () => {
  await gpu();
  const arb = fc.record({
    lead: fc.integer({ min: 0, max: 2 }), // 0: x [H, T, W] without a batch axis
    H: fc.integer({ min: 1, max: 3 }),
    T: fc.integer({ min: 1, max: 5 }),
    at: fc.integer({ min: 0, max: 5 }),
    rest: fc.integer({ min: 0, max: 4 }),
    start: fc.integer({ min: 0, max: 5 }),
    half: fc.integer({ min: 1, max: 4 }),
    offset: fc.integer({ min: 0, max: 3000 }),
    byTensor: fc.boolean(),
    interleaved: fc.boolean(),
    factor: fc.constantFrom(1, 1.1386),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(
    arb,
    async ({ lead, H, T, at, rest, start, half, offset, byTensor, interleaved, factor, seed }) => {
      const L = Math.max(lead, 1), W = at + rest, d = 2 * half, Ws = start + d;
      const o = { interleaved, attentionFactor: factor };
      const inv = invFreqRef(d, 10000);
      const invT = mg.tensor(Float32Array.from(inv));
      const lb = lead ? [L] : [];
      // x: the head view of a [.., T, H, W] projection; shared: [.., T, Ws].
      const pv = seededValues(L * T * H * W, seed, -2, 2);
      const proj = mg.tensor(pv, { shape: [...lb, T, H * W], requiresGrad: true });
      const xr = permuteData(pv, [L, T, H, W], [0, 2, 1, 3]);
      const sv = seededValues(L * T * Ws, seed + 2, -2, 2);
      const shared = mg.tensor(sv, { shape: [...lb, T, Ws], requiresGrad: true });
      const hp = Array.from({ length: H * T }, (_, r) => (r * 53 + offset) % 7000);
      const posT = byTensor ? mg.tensor(hp, { shape: [H, T], dtype: "i32" }) : null;
      const pos = Array.from(
        { length: L * H * T },
        (_, r) => byTensor ? hp[r % (H * T)] : offset + (r % T),
      );
      const kvh = lead
        ? proj.reshape([L, T, H, W]).permute([0, 2, 1, 3])
        : proj.reshape([T, H, W]).permute([1, 0, 2]);
      let y!: mg.Tensor;
      const f = dispatches(
        () => (y = ropeInsertShared(kvh, at, shared, start, posT ?? offset, invT, o)),
      );
      assert.equal(f.total, 1, JSON.stringify([...f.by]));
      assert.deepEqual(y.shape, [...lb, H, T, W + d]);
      const sR = nd(sv, [L, T, Ws]);
      const ref = insertRef(nd(xr.data, [L, H, T, W]), at, sR, start, pos, inv, o);
      await assertTensorClose(y, nd(ref.data, y.shape), ROT, "ropeInsertShared y");
      const gv = seededValues(L * H * T * (W + d), seed + 1, -1, 1);
      const g = mg.tensor(gv, { shape: y.shape });
      const b = dispatches(() => y.backward(g));
      assert.equal(b.total, 1, `backward: ${JSON.stringify([...b.by])}`);
      assert.ok(proj.grad!.isContiguous, "d(x) reaches the projection's layout as a view");
      const { dx, ds } = insertVjp(nd(gv, [L, H, T, W + d]), at, [L, T, Ws], start, H, pos, inv, o);
      const back = permuteData(dx.data, [L, H, T, W], [0, 2, 1, 3]);
      await assertTensorClose(proj.grad!, nd(back.data, proj.shape), ROT, "d(x)");
      await assertTensorClose(shared.grad!, nd(ds.data, shared.shape), SUM, "d(shared)");
      for (const t of [invT, proj, shared, kvh, y, g, posT]) t?.dispose();
    },
    14,
  );
});

Deno.test("ropeInsertShared: reference vjp vs finite differences, f16, errors; attention on k/v slices of its output binds one buffer", async () => {
  const info = await gpu();
  const o = { interleaved: true, attentionFactor: 1.3 };
  const [H, T, W, at, start, d] = [2, 3, 5, 2, 3, 4];
  const inv = invFreqRef(d, 10000);
  const pos = Array.from({ length: H * T }, (_, r) => 7 + (r % T));
  const x = nd(seededValues(H * T * W, 1, -2, 2), [1, H, T, W]);
  const s = nd(seededValues(T * (start + d), 2, -2, 2), [1, T, start + d]);
  const g = nd(seededValues(H * T * (W + d), 3, -1, 1), [1, H, T, W + d]);
  const vjp = insertVjp(g, at, [1, T, start + d], start, H, pos, inv, o);
  const tol = { rtol: 1e-6, atol: 1e-8 };
  const numX = numericGrad((v) => dot(insertRef(v, at, s, start, pos, inv, o), g), x);
  const numS = numericGrad((v) => dot(insertRef(x, at, v, start, pos, inv, o), g), s);
  assertClose(vjp.dx.data, numX, tol, "vjp x");
  assertClose(vjp.ds.data, numS, tol, "vjp shared");

  const invT = mg.tensor(Float32Array.from(inv));
  if (info.f16) {
    const xh = mg.tensor([...x.data], { shape: x.shape, dtype: "f16", requiresGrad: true });
    const sh = mg.tensor([...s.data], { shape: s.shape, dtype: "f16", requiresGrad: true });
    const y = ropeInsertShared(xh, at, sh, start, 7, invT, o);
    const F16 = { rtol: 0, atol: 2e-2 };
    await assertTensorClose(y.cast("f32"), insertRef(x, at, s, start, pos, inv, o), F16, "f16 y");
    y.backward(mg.tensor([...g.data], { shape: g.shape, dtype: "f16" }));
    await assertTensorClose(xh.grad!.cast("f32"), vjp.dx, F16, "f16 d(x)");
    await assertTensorClose(sh.grad!.cast("f32"), vjp.ds, F16, "f16 d(shared)");
    for (const t of [xh, sh, y]) t.dispose();
  } else console.log("adapter has no shader-f16: f16 ropeInsertShared not tested");

  // k and v as slices of one tensor (as of ropeInsertShared's output): attention binds the
  // buffer once (no alias copy), and the output and gradients equal those of separate
  // contiguous copies bit for bit.
  const kvv = seededValues(2 * 2 * 6 * 16, 4, -2, 2);
  const kv = mg.tensor(kvv, { shape: [2, 2, 6, 16], requiresGrad: true });
  const qv = seededValues(2 * 2 * 6 * 12, 6, -2, 2);
  const q1 = mg.tensor(qv, { shape: [2, 2, 6, 12], requiresGrad: true });
  const q2 = mg.tensor(qv, { shape: [2, 2, 6, 12], requiresGrad: true });
  const k = kv.slice(3, 0, 12), v = kv.slice(3, 12, 16);
  const k2 = mg.noGrad(() => k.contiguous()), v2 = mg.noGrad(() => v.contiguous());
  k2.requiresGrad = v2.requiresGrad = true;
  let r1!: mg.AttentionResult;
  const fwd = dispatches(() => (r1 = mg.attention(q1, k, v)));
  assert.equal(fwd.by.get("alias_copy"), undefined, JSON.stringify([...fwd.by]));
  const r2 = mg.attention(q2, k2, v2);
  assert.deepEqual(await r1.out.data(), await r2.out.data());
  const go = mg.tensor(seededValues(2 * 2 * 6 * 4, 7, -1, 1), { shape: r1.out.shape });
  const bwd = dispatches(() => r1.out.backward(go));
  assert.equal(bwd.by.get("alias_copy"), undefined, JSON.stringify([...bwd.by]));
  r2.out.backward(go);
  assert.deepEqual(await q1.grad!.data(), await q2.grad!.data());
  const dkv = nd(await kv.grad!.data(), [2, 2, 6, 16]);
  assert.deepEqual(Float32Array.from(cols(dkv, 0, 12).data), await k2.grad!.data());
  assert.deepEqual(Float32Array.from(cols(dkv, 12, 4).data), await v2.grad!.data());
  for (const t of [kv, q1, q2, k, v, k2, v2, r1.out, r1.maxLogits, r2.out, r2.maxLogits, go]) {
    t.dispose();
  }

  expectMgError(
    () => ropeInsertShared(mg.zeros([2, 3, 4]), 1, mg.zeros([4, 6]), 2, 0, 10000),
    "ropeInsertShared",
    "shared",
  );
  expectMgError(
    () => ropeInsertShared(mg.zeros([2, 3, 4]), 1, mg.zeros([3, 5]), 2, 0, 10000),
    "ropeInsertShared",
    "Ws − start even",
  );
  expectMgError(
    () => ropeInsertShared(mg.zeros([2, 3, 4]), 5, mg.zeros([3, 6]), 2, 0, 10000),
    "ropeInsertShared",
    "at",
  );
  expectMgError(
    () => ropeInsertShared(mg.zeros([3, 4]), 1, mg.zeros([6]), 2, 0, 10000),
    "ropeInsertShared",
    "[..., H, T, W]",
  );
  invT.dispose();
});
