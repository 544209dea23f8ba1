/**
 * Indexing ops vs float64 references (tests/reference/indexing.ts), on random shapes with
 * repeated, negative and out-of-range indices (with the GPU index check off, to pin the
 * kernels' own behaviour), strided inputs and strided index views.
 *
 * Tolerances: reads (indexSelect, gather, embedding, topk) copy f32 values, so they must
 * match exactly. Writes that sum repeated targets (scatterAdd, indexAdd, and the backward of
 * the reads) add f32 values of magnitude <= 3 in an order fixed by the GPU's atomics, at
 * most ~8 terms per target here: rtol 1e-5 + atol 1e-5 covers that rounding. Integer-valued
 * (i32, or f32 small integers) sums must be exact whatever the order.
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import {
  assertClose,
  assertMemoryFlat,
  assertTensorClose,
  check,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import { dot, nd, type NDArray, numericGrad, ravel, unravel } from "./reference/ndarray.ts";
import {
  embeddingRef,
  embeddingVjp,
  gatherRef,
  gatherVjp,
  indexAddRef,
  indexAddVjp,
  indexSelectRef,
  indexSelectVjp,
  scatterAddRef,
  scatterAddVjp,
  topkRef,
  topkVjp,
} from "./reference/indexing.ts";

/**
 * Runs a test with the GPU index check off: these properties pin what the kernels do with
 * out-of-range indices (reads give 0, writes are dropped); tests/check_indices_test.ts checks
 * that the same kind of indices are reported when the check is on (the default).
 */
function uncheckedIndices(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const was = mg.setCheckIndices(false);
    try {
      await fn();
    } finally {
      mg.setCheckIndices(was);
    }
  };
}

const EXACT = { rtol: 0, atol: 0 };
const SUMS = { rtol: 1e-5, atol: 1e-5 };
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function valuesFor(n: number, seed: number, lo = -3, hi = 3): Float32Array {
  const out = new Float32Array(n);
  let s = (seed >>> 0) || 7;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = Math.fround(lo + (s / 2 ** 32) * (hi - lo));
  }
  return out;
}

/** Indices in [-n-1, n]: mostly valid, some negative, some out of range, many repeats. */
function indicesFor(count: number, n: number, seed: number): number[] {
  const v = valuesFor(count, seed, 0, 1);
  return Array.from(v, (u) => Math.min(Math.floor(u * (2 * n + 2)), 2 * n + 1) - n - 1);
}

/** f32 tensor with `values` (row-major in `shape`); `strided` stores it with axes reversed. */
function make(values: Float32Array, shape: number[], strided: boolean, grad = false): mg.Tensor {
  if (!strided || shape.length < 2) return mg.tensor(values, { shape, requiresGrad: grad });
  const rev = [...shape].reverse();
  const stored = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    stored[ravel(unravel(i, shape).reverse(), rev)] = values[i];
  }
  const base = mg.tensor(stored, { shape: rev });
  const view = base.permute([...rev.keys()].reverse());
  base.dispose();
  if (grad) throw new Error("strided leaves are not leaves");
  return view;
}

function i32(values: readonly number[], shape: readonly number[]): mg.Tensor {
  return mg.tensor(Int32Array.from(values), { shape, dtype: "i32" });
}

const arbShape = fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 });

/** x shape, axis, an index shape fitting x on the other axes, strided flag, seed. */
const arbGatherCase = fc.tuple(
  arbShape,
  fc.nat(),
  fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 4, maxLength: 4 }),
  fc.integer({ min: 0, max: 6 }),
  fc.boolean(),
  fc.integer(),
).map(([shape, a, fr, len, strided, seed]) => {
  const axis = a % shape.length;
  const ishape = shape.map((d, i) => (i === axis ? len : 1 + Math.floor(fr[i] * (d - 1 + 0.999))));
  return { shape, axis, ishape, strided, seed };
});

Deno.test(
  "indexSelect: forward exact, backward sums repeats (rtol/atol 1e-5)",
  uncheckedIndices(async () => {
    await gpu();
    await check(
      fc.tuple(arbShape, fc.nat(), fc.integer({ min: 0, max: 8 }), fc.boolean(), fc.integer()),
      async ([shape, a, len, strided, seed]) => {
        const axis = a % shape.length;
        const xv = valuesFor(size(shape), seed);
        const idx = indicesFor(len, shape[axis], seed + 1);
        const x = make(xv, shape, strided);
        // A strided index view: every other entry of a longer tensor.
        const full = i32(idx.flatMap((j) => [j, 12345]), [2 * len]);
        const index = strided ? full.slice(0, 0, undefined, 2) : i32(idx, [len]);
        const out = mg.indexSelect(x, axis - (seed & 1 ? shape.length : 0), index);
        const ref = indexSelectRef(nd(xv, shape), axis, idx);
        await assertTensorClose(out, ref, EXACT, `indexSelect ${shape} axis ${axis} [${idx}]`);
        // Backward.
        const xl = mg.tensor(xv, { shape, requiresGrad: true });
        const y = mg.indexSelect(xl, axis, index);
        const gv = valuesFor(ref.size, seed + 2);
        const g = mg.tensor(gv, { shape: ref.shape });
        y.backward(g);
        const want = indexSelectVjp(nd(gv, ref.shape), shape, axis, idx);
        await assertTensorClose(xl.grad!, want, SUMS, "indexSelect grad");
        for (const t of [x, full, index, out, xl, y, g]) t.dispose();
      },
      20,
    );
  }),
);

Deno.test(
  "gather: forward exact, backward = scatterAdd (rtol/atol 1e-5)",
  uncheckedIndices(async () => {
    await gpu();
    await check(arbGatherCase, async ({ shape, axis, ishape, strided, seed }) => {
      const xv = valuesFor(size(shape), seed);
      const iv = indicesFor(size(ishape), shape[axis], seed + 1);
      const x = make(xv, shape, strided);
      const index = i32(iv, ishape);
      const out = mg.gather(x, axis, index);
      const ref = gatherRef(nd(xv, shape), axis, nd(iv, ishape));
      await assertTensorClose(out, ref, EXACT, `gather ${shape} axis ${axis} index ${ishape}`);
      const xl = mg.tensor(xv, { shape, requiresGrad: true });
      const y = xl.gather(axis, index);
      const gv = valuesFor(ref.size, seed + 2);
      const g = mg.tensor(gv, { shape: ishape });
      y.backward(g);
      await assertTensorClose(
        xl.grad!,
        gatherVjp(nd(gv, ishape), shape, axis, nd(iv, ishape)),
        SUMS,
        "gather grad",
      );
      for (const t of [x, index, out, xl, y, g]) t.dispose();
    }, 20);
  }),
);

Deno.test(
  "scatterAdd: forward sums repeats (rtol/atol 1e-5), backward dx = g, dsrc = gather",
  uncheckedIndices(async () => {
    await gpu();
    await check(
      fc.tuple(
        arbGatherCase,
        fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 4, maxLength: 4 }),
      ),
      async ([{ shape, axis, ishape, strided, seed }, extra]) => {
        const sshape = ishape.map((d, i) => d + extra[i]);
        const xv = valuesFor(size(shape), seed);
        const sv = valuesFor(size(sshape), seed + 3);
        const iv = indicesFor(size(ishape), shape[axis], seed + 1);
        const x = mg.tensor(xv, { shape, requiresGrad: true });
        const src = strided
          ? make(sv, sshape, true)
          : mg.tensor(sv, { shape: sshape, requiresGrad: true });
        const index = i32(iv, ishape);
        const out = mg.scatterAdd(x, axis, index, src);
        const ref = scatterAddRef(nd(xv, shape), axis, nd(iv, ishape), nd(sv, sshape));
        await assertTensorClose(out, ref, SUMS, `scatterAdd ${shape} axis ${axis} idx ${ishape}`);
        const gv = valuesFor(ref.size, seed + 2);
        const g = mg.tensor(gv, { shape });
        out.backward(g);
        const want = scatterAddVjp(nd(gv, shape), axis, nd(iv, ishape), sshape);
        await assertTensorClose(x.grad!, want.dx, EXACT, "scatterAdd dx");
        if (!strided) await assertTensorClose(src.grad!, want.dsrc, EXACT, "scatterAdd dsrc");
        for (const t of [x, src, index, out, g]) t.dispose();
      },
      20,
    );
  }),
);

Deno.test(
  "indexAdd: forward sums repeats (rtol/atol 1e-5), backward dx = g, dsrc = indexSelect",
  uncheckedIndices(async () => {
    await gpu();
    await check(
      fc.tuple(arbShape, fc.nat(), fc.integer({ min: 0, max: 8 }), fc.integer()),
      async ([shape, a, len, seed]) => {
        const axis = a % shape.length;
        const sshape = shape.map((d, i) => (i === axis ? len : d));
        const xv = valuesFor(size(shape), seed);
        const sv = valuesFor(size(sshape), seed + 3);
        const idx = indicesFor(len, shape[axis], seed + 1);
        const x = mg.tensor(xv, { shape, requiresGrad: true });
        const src = mg.tensor(sv, { shape: sshape, requiresGrad: true });
        const index = i32(idx, [len]);
        const out = mg.indexAdd(x, axis, index, src);
        const ref = indexAddRef(nd(xv, shape), axis, idx, nd(sv, sshape));
        await assertTensorClose(out, ref, SUMS, `indexAdd ${shape} axis ${axis} [${idx}]`);
        const gv = valuesFor(ref.size, seed + 2);
        const g = mg.tensor(gv, { shape });
        out.backward(g);
        const want = indexAddVjp(nd(gv, shape), axis, idx);
        await assertTensorClose(x.grad!, want.dx, EXACT, "indexAdd dx");
        await assertTensorClose(src.grad!, want.dsrc, EXACT, "indexAdd dsrc");
        for (const t of [x, src, index, out, g]) t.dispose();
      },
      20,
    );
  }),
);

Deno.test("indexAdd/scatterAdd under heavy contention lose no update (integer values: exact)", async () => {
  await gpu();
  const n = 3000;
  const idx = Array.from({ length: n }, (_, i) => (i * 7) % 3 === 0 ? 1 : (i % 2 ? -1 : 0));
  const vals = Array.from({ length: n }, (_, i) => (i % 9) - 4);
  const want = [0, 0, 0];
  idx.forEach((j, i) => want[j < 0 ? j + 3 : j] += vals[i]);
  const index = i32(idx, [n]);
  const f = mg.tensor(Float32Array.from(vals));
  const outF = mg.indexAdd(mg.zeros([3]), 0, index, f);
  assertClose(await outF.data(), want, EXACT, "f32 indexAdd with 1000 hits per slot");
  const iv = i32(vals, [n]);
  const base = mg.zeros([3], { dtype: "i32" });
  const outI = mg.scatterAdd(base, 0, index, iv);
  if (outI.dtype !== "i32") throw new Error(`dtype ${outI.dtype}`);
  assertClose(await outI.data(), want, EXACT, "i32 scatterAdd");
  for (const t of [index, f, outF, iv, base, outI]) t.dispose();
});

Deno.test(
  "embedding: [...ids, D] rows, zero rows for invalid ids, grad sums repeats",
  uncheckedIndices(async () => {
    await gpu();
    await check(
      fc.tuple(
        fc.integer({ min: 1, max: 9 }),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 0, maxLength: 3 }),
        fc.integer(),
      ),
      async ([V, D, ishape, seed]) => {
        const wv = valuesFor(V * D, seed);
        const ids = indicesFor(size(ishape), V, seed + 1);
        const w = mg.tensor(wv, { shape: [V, D], requiresGrad: true });
        const idT = i32(ids, ishape);
        const out = mg.embedding(w, idT);
        const ref = embeddingRef(nd(wv, [V, D]), nd(ids, ishape));
        await assertTensorClose(out, ref, EXACT, `embedding V${V} D${D} ids ${ishape}`);
        const gv = valuesFor(ref.size, seed + 2);
        const g = mg.tensor(gv, { shape: ref.shape });
        out.backward(g);
        const want = embeddingVjp(nd(gv, ref.shape), [V, D], nd(ids, ishape));
        await assertTensorClose(w.grad!, want, SUMS, "embedding grad");
        for (const t of [w, idT, out, g]) t.dispose();
      },
      15,
    );
  }),
);

/** Row values: continuous, or drawn from 3 levels to force ties. */
function topkValues(n: number, seed: number, ties: boolean): Float32Array {
  const v = valuesFor(n, seed);
  return ties ? v.map((x) => Math.round(x / 2)) : v;
}

Deno.test("topk: values and indices exact (ties -> lower index, k up to n), backward scatters g", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 2 }),
      fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 129, max: 700 })),
      fc.double({ min: 0, max: 1, noNaN: true }),
      fc.boolean(),
      fc.boolean(),
      fc.integer(),
    ),
    async ([lead, n, kf, ties, kIsN, seed]) => {
      const shape = [...lead, n];
      const k = kIsN && n <= 40 ? n : 1 + Math.floor(kf * (Math.min(n, 64) - 1 + 0.999));
      const xv = topkValues(size(shape), seed, ties);
      const x = mg.tensor(xv, { shape, requiresGrad: true });
      const { values, indices } = mg.topk(x, k);
      const ref = topkRef(nd(xv, shape), k);
      await assertTensorClose(indices, ref.indices, EXACT, `topk indices ${shape} k ${k}`);
      await assertTensorClose(values, ref.values, EXACT, `topk values ${shape} k ${k}`);
      if (indices.dtype !== "i32") throw new Error(`indices dtype ${indices.dtype}`);
      const gv = valuesFor(ref.values.size, seed + 2);
      const g = mg.tensor(gv, { shape: ref.values.shape });
      values.backward(g);
      const want = topkVjp(nd(gv, ref.values.shape), shape, ref.indices);
      await assertTensorClose(x.grad!, want, EXACT, "topk grad");
      for (const t of [x, values, indices, g]) t.dispose();
    },
    20,
  );
});

Deno.test("topk orders NaN above +Inf, -0 with +0 by index, on a strided view and on i32", async () => {
  await gpu();
  const bits = new Uint32Array([0x7fc00000, 0x3f800000, 0x80000000, 0x00000000, 0xff800000]);
  const row = new Float32Array(bits.buffer); // NaN, 1, -0, +0, -Inf
  const data = new Float32Array(
    [...row, 0x7f800000, 2, 3, 4, 5].map((v, i) => i === 5 ? Infinity : v),
  );
  const base = mg.tensor(data, { shape: [2, 5] });
  const x = base.slice(0, 0, 1); // [1, 5] view of the first row
  const { values, indices } = mg.topk(x, 5);
  assertClose(await indices.data(), [0, 1, 2, 3, 4], EXACT, "NaN, 1, -0, +0, -Inf");
  const v = await values.data();
  const vb = new Uint32Array(v.buffer);
  if (!Number.isNaN(v[0]) || vb[2] !== 0x80000000 || vb[3] !== 0 || v[4] !== -Infinity) {
    throw new Error(`topk values ${Array.from(v)}`);
  }
  const xt = base.transpose(); // [5, 2], non-contiguous
  const t2 = mg.topk(xt, 2);
  const ref = topkRef(nd(await xt.data(), [5, 2]), 2);
  await assertTensorClose(t2.indices, ref.indices, EXACT, "topk of a transposed view");
  const xi = i32([5, -7, 5, 2147483647, -2147483648, 0], [6]);
  const ti = mg.topk(xi, 6);
  assertClose(await ti.values.data(), [2147483647, 5, 5, 0, -7, -2147483648], EXACT, "i32");
  assertClose(await ti.indices.data(), [3, 0, 2, 5, 1, 4], EXACT, "i32 indices");
  for (
    const t of [base, x, values, indices, xt, t2.values, t2.indices, xi, ti.values, ti.indices]
  ) {
    t.dispose();
  }
});

Deno.test("reference vjps match central differences (float64, rtol/atol 1e-6)", () => {
  const tol = { rtol: 1e-6, atol: 1e-6 };
  fc.assert(
    fc.property(arbGatherCase, ({ shape, axis, ishape, seed }) => {
      const x = nd(valuesFor(size(shape), seed), shape);
      const index = nd(indicesFor(size(ishape), shape[axis], seed + 1), ishape);
      const g = nd(valuesFor(size(ishape), seed + 2), ishape);
      const fg = (v: NDArray) => dot(gatherRef(v, axis, index), g);
      assertClose(gatherVjp(g, shape, axis, index).data, numericGrad(fg, x), tol, "gather");
      // scatterAdd: both x and src.
      const src = nd(valuesFor(size(ishape), seed + 3), ishape);
      const gx = nd(valuesFor(size(shape), seed + 4), shape);
      const vjp = scatterAddVjp(gx, axis, index, ishape);
      const fx = (v: NDArray) => dot(scatterAddRef(v, axis, index, src), gx);
      const fs = (v: NDArray) => dot(scatterAddRef(x, axis, index, v), gx);
      assertClose(vjp.dx.data, numericGrad(fx, x), tol, "scatterAdd dx");
      assertClose(vjp.dsrc.data, numericGrad(fs, src), tol, "scatterAdd dsrc");
      // indexSelect / indexAdd along the same axis with a 1-D index.
      const idx = Array.from(index.data).slice(0, 5);
      const sshape = shape.map((d, i) => (i === axis ? idx.length : d));
      const gs = nd(valuesFor(size(sshape), seed + 5), sshape);
      const fsel = (v: NDArray) => dot(indexSelectRef(v, axis, idx), gs);
      assertClose(indexSelectVjp(gs, shape, axis, idx).data, numericGrad(fsel, x), tol, "sel");
      const s2 = nd(valuesFor(size(sshape), seed + 6), sshape);
      const fadd = (v: NDArray) => dot(indexAddRef(x, axis, idx, v), gx);
      assertClose(indexAddVjp(gx, axis, idx).dsrc.data, numericGrad(fadd, s2), tol, "indexAdd");
      // embedding, with a [V, D] view of x.
      const w = nd(x.data, [shape[0], size(shape) / shape[0]]);
      const ids = nd(indicesFor(4, shape[0], seed + 7), [2, 2]);
      const ge = nd(valuesFor(4 * w.shape[1], seed + 8), [2, 2, w.shape[1]]);
      const femb = (v: NDArray) => dot(embeddingRef(v, ids), ge);
      assertClose(embeddingVjp(ge, w.shape, ids).data, numericGrad(femb, w), tol, "embedding");
      // topk on distinct values (differentiable away from ties).
      const n = shape[shape.length - 1];
      const distinct = nd(x.data.map((v, i) => v + i * 1e-3), shape);
      const k = 1 + (seed >>> 0) % n;
      const tk = topkRef(distinct, k);
      const gt = nd(valuesFor(tk.values.size, seed + 9), tk.values.shape);
      const ftk = (v: NDArray) => dot(topkRef(v, k).values, gt);
      assertClose(topkVjp(gt, shape, tk.indices).data, numericGrad(ftk, distinct), tol, "topk");
    }),
    { numRuns: 25 },
  );
});

Deno.test(
  "f16 indexSelect / scatterAdd / topk (when shader-f16 exists; exact on halves)",
  uncheckedIndices(async () => {
    const info = await gpu();
    if (!info.f16) return;
    const x = mg.tensor([0.5, -1.5, 2, 8], { dtype: "f16", requiresGrad: true });
    const idx = i32([3, 3, 0, -1, 9], [5]);
    const s = mg.indexSelect(x, 0, idx);
    assertClose(await s.data(), [8, 8, 0.5, 8, 0], EXACT, "f16 indexSelect");
    s.backward(mg.ones([5], { dtype: "f16" }));
    assertClose(await x.grad!.data(), [1, 0, 0, 3], EXACT, "f16 indexSelect grad");
    const sa = mg.scatterAdd(
      x,
      0,
      i32([1, 1, 1], [3]),
      mg.tensor([0.25, 0.25, 0.5], { dtype: "f16" }),
    );
    assertClose(await sa.data(), [0.5, -0.5, 2, 8], EXACT, "f16 scatterAdd");
    const tk = mg.topk(x, 2);
    assertClose(await tk.values.data(), [8, 2], EXACT, "f16 topk");
    if (s.dtype !== "f16" || sa.dtype !== "f16" || tk.values.dtype !== "f16") {
      throw new Error("f16 outputs must stay f16");
    }
    for (const t of [x, idx, s, sa, tk.values, tk.indices]) t.dispose();
  }),
);

Deno.test("indexing ops forward+backward keep memory flat", async () => {
  await gpu();
  // Every tensor the test creates is disposed by hand (no scope), so a leak inside an op
  // (forward or vjp) shows up as live tensors or bytes in use.
  const run = () => {
    const made: mg.Tensor[] = [];
    const m = <T extends mg.Tensor>(t: T): T => (made.push(t), t);
    const x = m(mg.randn([5, 4], { seed: 3, requiresGrad: true }));
    const a = m(mg.indexSelect(x, 0, m(i32([0, 4, 4, -1, 2], [5]))));
    const b = m(mg.gather(x, 1, m(i32([0, 1, 1, 3, 2, 2, 0, 0, 1, 1], [5, 2]))));
    const c = m(mg.scatterAdd(x, 0, m(i32([1, 1, 1, 1], [1, 4])), m(x.slice(0, 1, 2))));
    const d = m(mg.indexAdd(x, 1, m(i32([0, 0], [2])), b));
    const e = m(mg.embedding(x, m(i32([1, 1, 2], [3]))));
    const t = mg.topk(x, 2);
    m(t.values);
    m(t.indices);
    let loss = m(a.sum());
    for (const y of [c, d, e, t.values]) loss = m(loss.add(m(y.sum())));
    loss.backward();
    m(x.grad!);
    for (const z of made) z.dispose();
  };
  await assertMemoryFlat(run);
});

Deno.test("indexing ops reject bad input with MoongradError naming op and argument", async () => {
  await gpu();
  const x = mg.zeros([2, 3]);
  const fi = mg.zeros([2], { dtype: "f32" });
  const i1 = i32([0, 1], [2]);
  const i2 = i32([0, 1, 0, 1], [2, 2]);
  const big = i32([0, 0, 0, 0, 0, 0, 0, 0], [4, 2]);
  const b = mg.zeros([2, 3], { dtype: "bool" });
  const s = mg.tensor(1);
  const cases: [string, () => unknown, RegExp][] = [
    ["indexSelect", () => mg.indexSelect(x, 0, fi), /index must have dtype i32, got f32/],
    ["indexSelect", () => mg.indexSelect(x, 0, i2), /index must be 1-D/],
    ["indexSelect", () => mg.indexSelect(x, 2, i1), /axis 2 is out of range/],
    ["indexSelect", () => mg.indexSelect(s, 0, i1), /rank >= 1/],
    ["gather", () => mg.gather(x, 1, i1), /index \[2\] must have the rank of x \[2, 3\]/],
    ["gather", () => mg.gather(x, 1, big), /index \[4, 2\].*but 1/],
    ["embedding", () => mg.embedding(fi, i1), /weight must be 2-D/],
    ["embedding", () => mg.embedding(x, fi), /ids must have dtype i32/],
    ["scatterAdd", () => mg.scatterAdd(x, 0, i2, fi), /index \[2, 2\].*src \[2\]/],
    [
      "scatterAdd",
      () => mg.scatterAdd(x, 0, i2, mg.zeros([2, 2], { dtype: "i32" })),
      /src dtype i32/,
    ],
    ["scatterAdd", () => mg.scatterAdd(b, 0, i2, b), /got bool/],
    ["indexAdd", () => mg.indexAdd(x, 1, i1, x), /src shape \[2, 3\] must be \[2, 2\]/],
    ["indexAdd", () => mg.indexAdd(x, 1, i2, x), /index must be 1-D/],
    ["topk", () => mg.topk(x, 0), /k must be an integer in 1..3/],
    ["topk", () => mg.topk(x, 4), /got 4/],
    ["topk", () => mg.topk(x, 1.5), /got 1.5/],
    ["topk", () => mg.topk(s, 1), /rank >= 1/],
    ["topk", () => mg.topk(b, 1), /got bool/],
  ];
  for (const [op, fn, msg] of cases) {
    let err: unknown = null;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    if (!(err instanceof mg.MoongradError) || !err.message.startsWith(`moongrad.${op}:`)) {
      throw new Error(`${op}: expected a MoongradError, got ${err}`);
    }
    if (!msg.test(err.message)) throw new Error(`${op}: message ${err.message} !~ ${msg}`);
  }
  for (const t of [x, fi, i1, i2, big, b, s]) t.dispose();
});

Deno.test("indexAdd and the embedding gradient are deterministic: repeated runs are bit-identical", async () => {
  await gpu();
  const V = 7;
  const D = 33;
  const ids = mg.tensor(Int32Array.from({ length: 500 }, (_, i) => (i * 13) % V), {
    shape: [20, 25],
  });
  const runs: Float32Array[] = [];
  for (let r = 0; r < 3; r++) {
    const w = mg.tensor(seededValues(V * D, 5), { shape: [V, D], requiresGrad: true });
    const g = mg.tensor(seededValues(500 * D, 6), { shape: [20, 25, D] });
    const e = mg.embedding(w, ids);
    e.backward(g);
    runs.push((await w.grad!.data()) as Float32Array);
    for (const t of [w, g, e]) t.dispose();
  }
  assert.deepEqual(runs[1], runs[0]);
  assert.deepEqual(runs[2], runs[0]);
  ids.dispose();
});
