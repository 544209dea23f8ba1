/**
 * matmul forward and backward against the float64 reference.
 *
 * Tolerance: inputs are exact f32 values, so the only error is f32 rounding of the products
 * and of the running sum over K, bounded by about K·2⁻²⁴·Σₖ|aₖbₖ| (≈ 4e-6·Σ|ab| at K = 70).
 * Each element is checked against 1e-4·Σₖ|aₖbₖ| + 1e-6 — "1e-4 relative" to the magnitude
 * of the terms rather than of the (possibly cancelled) sum. A missing or doubled term is
 * about Σ|ab|/K ≥ 1.4e-2·Σ|ab| and fails by a wide margin.
 */
import * as mg from "../mod.ts";
import {
  CPU_MATMUL_CONFIG,
  GPU_MATMUL_CONFIG,
  type MatmulConfig,
  setMatmulConfig,
} from "../ops/matmul.ts";
import { runtimeStats } from "../core/runtime.ts";
import { arbBroadcastPair, assertClose, check, fc, gpu, seededValues } from "./util.ts";
import { dot, nd, NDArray, numericGrad, permute, size } from "./reference/ndarray.ts";
import { matmulAbsRef, matmulRef, matmulVjpRef } from "./reference/matmul.ts";
import assert from "node:assert/strict";

/** Asserts |actual − ref| ≤ rel·scale + abs elementwise, with equal shapes. */
function assertWithin(
  actual: ArrayLike<number>,
  shape: readonly number[],
  ref: NDArray,
  scale: NDArray,
  what: string,
  rel = 1e-4,
  abs = 1e-6,
): void {
  assert.deepEqual([...shape], [...ref.shape], `${what}: shape`);
  assert.equal(actual.length, ref.size, `${what}: length`);
  for (let i = 0; i < ref.size; i++) {
    const tol = rel * scale.data[i] + abs;
    if (!(Math.abs(actual[i] - ref.data[i]) <= tol)) {
      throw new Error(`${what}: index ${i}: got ${actual[i]}, expected ${ref.data[i]} ± ${tol}`);
    }
  }
}

/** One operand: its logical shape, values, and whether the GPU tensor is a transposed view. */
interface Side {
  shape: number[];
  values: Float32Array;
  transposed: boolean;
}

/** A GPU tensor with `side`'s logical shape and values; transposed sides are views. */
function upload(side: Side, requiresGrad = false): { t: mg.Tensor; base: mg.Tensor } {
  const { shape, values } = side;
  if (!side.transposed || shape.length < 2) {
    const t = mg.tensor(values, { shape, requiresGrad });
    return { t, base: t };
  }
  const r = shape.length;
  const axes = [...shape.keys()];
  [axes[r - 2], axes[r - 1]] = [axes[r - 1], axes[r - 2]];
  const stored = permute(nd(values, shape), axes); // the transpose, laid out contiguously
  const base = mg.tensor(Float32Array.from(stored.data), {
    shape: [...stored.shape],
    requiresGrad,
  });
  return { t: base.transpose(), base };
}

interface Case {
  a: Side;
  b: Side;
}

/** Random matmul problems: M, N, K in 1..maxDim (1 often), broadcast batches, views, 1-D. */
function arbCase(maxDim: number, maxBatchRank: number): fc.Arbitrary<Case> {
  const dim = fc.oneof(fc.constant(1), fc.integer({ min: 1, max: maxDim }));
  return fc.record({
    M: dim,
    N: dim,
    K: dim,
    batch: arbBroadcastPair(maxBatchRank, 3),
    aVec: fc.boolean(),
    bVec: fc.boolean(),
    ta: fc.boolean(),
    tb: fc.boolean(),
    seed: fc.integer({ min: 1, max: 1e6 }),
  }).map(({ M, N, K, batch: [ba, bb], aVec, bVec, ta, tb, seed }) => {
    const aShape = aVec ? [K] : [...ba, M, K];
    const bShape = bVec ? [K] : [...bb, K, N];
    return {
      a: { shape: aShape, values: seededValues(size(aShape), seed), transposed: ta },
      b: { shape: bShape, values: seededValues(size(bShape), seed + 1), transposed: tb },
    };
  });
}

function describe(c: Case): string {
  const s = (x: Side) => `[${x.shape}]${x.transposed ? "ᵀview" : ""}`;
  return `${s(c.a)} @ ${s(c.b)}`;
}

async function checkForward(c: Case): Promise<void> {
  const a = upload(c.a);
  const b = upload(c.b);
  const out = mg.matmul(a.t, b.t);
  const ra = nd(c.a.values, c.a.shape);
  const rb = nd(c.b.values, c.b.shape);
  assertWithin(await out.data(), out.shape, matmulRef(ra, rb), matmulAbsRef(ra, rb), describe(c));
  for (const t of new Set([a.t, a.base, b.t, b.base, out])) t.dispose();
}

Deno.test("matmul forward vs float64 reference: random shapes, broadcast batches, transposed views, 1-D (tol 1e-4·Σ|ab|)", async () => {
  await gpu();
  await check(arbCase(70, 2), checkForward, 25);
});

Deno.test("matmul forward: every tile configuration, odd tiles, permuted ones, sizes that do not divide them (tol 1e-4·Σ|ab|)", async () => {
  await gpu();
  const configs: MatmulConfig[] = [
    CPU_MATMUL_CONFIG,
    GPU_MATMUL_CONFIG,
    { ...GPU_MATMUL_CONFIG, vec4: false },
    { wgX: 3, wgY: 5, tm: 3, tn: 2, bk: 5, shared: true, vec4: false },
    { wgX: 3, wgY: 5, tm: 3, tn: 2, bk: 5, shared: false, vec4: false },
    { wgX: 2, wgY: 3, tm: 4, tn: 4, bk: 3, shared: true, vec4: true },
    // Kernels are looked up by a key of the configuration's fields (ops/matmul.ts sourceKey):
    // two configurations whose values are a permutation of each other, one written with its
    // keys in another order, must each get their own kernel.
    { wgX: 4, wgY: 2, tm: 8, tn: 4, bk: 8, shared: false, vec4: true },
    { wgX: 2, wgY: 4, tm: 4, tn: 8, bk: 8, shared: false, vec4: true },
    { vec4: true, shared: false, bk: 8, tn: 8, tm: 4, wgY: 2, wgX: 4 },
  ];
  const cases: Case[] = [];
  const side = (shape: number[], seed: number, transposed = false): Side => ({
    shape,
    values: seededValues(size(shape), seed),
    transposed,
  });
  let seed = 1;
  // Skinny products (M or N <= 4) take their own one-dimensional tiles.
  const dims = [
    [37, 29, 41],
    [64, 32, 128],
    [8, 12, 20],
    [1, 9, 5],
    [6, 4, 1],
    [1, 16, 64],
    [
      3,
      8,
      40,
    ],
    [64, 16, 1],
    [40, 8, 2],
  ];
  for (const [M, K, N] of dims) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      cases.push({ a: side([2, M, K], seed++, ta), b: side([K, N], seed++, tb) });
    }
    cases.push({ a: side([3, 1, M, K], seed++), b: side([2, K, N], seed++, true) });
    cases.push({ a: side([M, K], seed++, true), b: side([K, N], seed++) });
  }
  try {
    for (const cfg of configs) {
      setMatmulConfig(cfg);
      for (const c of cases) await checkForward(c);
    }
  } finally {
    setMatmulConfig(null);
  }
});

Deno.test("matmul f16 vs float64 reference of the f16-rounded inputs (tol 2e-3·Σ|ab|: f16 output rounding)", async () => {
  const info = await gpu();
  if (!info.f16) return; // f16 needs shader-f16; nothing to test on this adapter
  await check(arbCase(40, 2), async (c) => {
    const round = (s: Side) => ({ ...s, values: Float32Array.from(new Float16Array(s.values)) });
    const sa = round(c.a);
    const sb = round(c.b);
    const a = mg.tensor(sa.values, { shape: sa.shape, dtype: "f16" });
    const b = mg.tensor(sb.values, { shape: sb.shape, dtype: "f16" });
    const at = sa.transposed && sa.shape.length > 1 ? a.transpose().contiguous().transpose() : a;
    const out = mg.matmul(at, b);
    assert.equal(out.dtype, "f16");
    const ra = nd(sa.values, sa.shape);
    const rb = nd(sb.values, sb.shape);
    // Accumulation is f32 (error ~1e-6·Σ|ab|); the f16 store rounds by up to 2⁻¹¹·|c|.
    assertWithin(await out.data(), out.shape, matmulRef(ra, rb), matmulAbsRef(ra, rb), "f16", 2e-3);
    for (const t of new Set([a, at, b, out])) t.dispose();
  }, 10);
});

Deno.test("matmul reads transposed and broadcast views in place: one dispatch, no copy", async () => {
  await gpu();
  const a = mg.randn([3, 40, 24], { seed: 3 });
  const b = mg.randn([30, 24], { seed: 4 });
  const bt = b.transpose();
  const ae = mg.randn([1, 24, 40], { seed: 5 }).expand([3, 24, 40]).transpose();
  await mg.sync();
  const before = runtimeStats();
  const c1 = mg.matmul(a, bt);
  const c2 = mg.matmul(ae, bt);
  // Two kernels (independent: co-launched as one launch, core/colaunch.ts).
  const after = runtimeStats();
  const kernels = after.dispatches - before.dispatches + after.coLaunched - before.coLaunched;
  assert.equal(kernels, 2, "one kernel per matmul");
  assert.deepEqual(c1.shape, [3, 40, 30]);
  assert.deepEqual(c2.shape, [3, 40, 30]);
  const [da, db] = [await a.data(), await b.data()];
  const ref = matmulRef(nd(da, [3, 40, 24]), permute(nd(db, [30, 24]), [1, 0]));
  assertClose(await c1.data(), ref, { rtol: 1e-4, atol: 1e-4 }, "a @ bᵀ");
  for (const t of [a, b, bt, ae, c1, c2]) t.dispose();
});

Deno.test("matmul edge sizes: K = 0 gives zeros, M = 0 gives an empty result, > 65535 workgroups", async () => {
  await gpu();
  const a = mg.ones([3, 0]);
  const b = mg.ones([0, 2]);
  const z = mg.matmul(a, b);
  assert.deepEqual(z.shape, [3, 2]);
  assert.deepEqual([...await z.data()], [0, 0, 0, 0, 0, 0]);
  const e0 = mg.ones([2, 0, 4]);
  const e1 = mg.ones([4, 5]);
  const e = mg.matmul(e0, e1);
  assert.deepEqual(e.shape, [2, 0, 5]);
  // 70000 batch entries of [1, 2] @ [2, 1]: one workgroup each, past the 65535 grid limit.
  const x = mg.full([70000, 1, 2], 1.5);
  const y = mg.full([70000, 2, 1], 2);
  const xy = mg.matmul(x, y);
  const d = await xy.data();
  assert.equal(d.length, 70000);
  assert.ok(d.every((v) => v === 6), "every batch entry is 1.5·2 + 1.5·2");
  for (const t of [a, b, z, e0, e1, e, x, y, xy]) t.dispose();
});

async function checkBackward(c: Case): Promise<void> {
  const a = upload(c.a, true);
  const b = upload(c.b, true);
  const ra = nd(c.a.values, c.a.shape);
  const rb = nd(c.b.values, c.b.shape);
  const ref = matmulRef(ra, rb);
  const gv = seededValues(ref.size, 99);
  const out = mg.matmul(a.t, b.t);
  const g = mg.tensor(gv, { shape: [...ref.shape] });
  out.backward(g);
  const rg = nd(gv, ref.shape);
  const [ga, gb] = matmulVjpRef(ra, rb, rg);
  // Scales: dA = g @ Bᵀ sums over n (and batch); dB = Aᵀ @ g sums over m (and batch).
  const [sa, sb] = matmulVjpRef(absOf(ra), absOf(rb), absOf(rg));
  for (
    const [side, base, grad, scale, name] of [
      [c.a, a.base, ga, sa, "dA"],
      [c.b, b.base, gb, sb, "dB"],
    ] as const
  ) {
    let expected = grad;
    let sc = scale;
    if (side.transposed && side.shape.length > 1) {
      const r = side.shape.length;
      const axes = [...side.shape.keys()];
      [axes[r - 2], axes[r - 1]] = [axes[r - 1], axes[r - 2]];
      expected = permute(grad, axes);
      sc = permute(scale, axes);
    }
    const got = base.grad!;
    assertWithin(await got.data(), got.shape, expected, sc, `${name} of ${describe(c)}`);
  }
  for (const t of new Set([a.t, a.base, b.t, b.base, out, g])) t.dispose();
}

function absOf(x: NDArray): NDArray {
  return new NDArray(x.data.map(Math.abs), x.shape);
}

Deno.test("matmul backward vs reference vjp: broadcast batches, transposed views, 1-D (tol 1e-4·Σ|terms|)", async () => {
  await gpu();
  await check(arbCase(24, 2), checkBackward, 20);
});

Deno.test("matmul backward: batch folded into one product ([B, T, C] @ [C, D]) and partial broadcasts", async () => {
  await gpu();
  const side = (shape: number[], seed: number, transposed = false): Side => ({
    shape,
    values: seededValues(size(shape), seed),
    transposed,
  });
  const cases: Case[] = [
    { a: side([3, 5, 7], 1), b: side([7, 6], 2) },
    { a: side([2, 3, 5, 7], 3), b: side([1, 1, 7, 6], 4) },
    { a: side([3, 5, 7], 5, true), b: side([7, 6], 6) },
    { a: side([5, 7], 7), b: side([3, 7, 6], 8) },
    { a: side([2, 1, 5, 7], 9), b: side([3, 7, 6], 10, true) },
    { a: side([7], 11), b: side([4, 7, 6], 12) },
    { a: side([4, 5, 7], 13), b: side([7], 14) },
  ];
  for (const c of cases) await checkBackward(c);
});

Deno.test("matmul reference vjp matches central finite differences (float64, rtol 1e-6)", () => {
  fc.assert(
    fc.property(arbCase(5, 2), (c) => {
      const a = nd(c.a.values, c.a.shape);
      const b = nd(c.b.values, c.b.shape);
      const out = matmulRef(a, b);
      const g = nd(seededValues(out.size, 7), out.shape);
      const [ga, gb] = matmulVjpRef(a, b, g);
      const fa = numericGrad((x) => dot(matmulRef(x, b), g), a);
      const fb = numericGrad((x) => dot(matmulRef(a, x), g), b);
      assertClose(ga.data, fa, { rtol: 1e-6, atol: 1e-7 }, "dA");
      assertClose(gb.data, fb, { rtol: 1e-6, atol: 1e-7 }, "dB");
    }),
    { numRuns: 40 },
  );
});

Deno.test("matmul frees every temporary: memory is flat across forward + backward", async () => {
  await gpu();
  const a = mg.randn([2, 3, 9, 7], { seed: 1, requiresGrad: true });
  const b = mg.randn([3, 7, 5], { seed: 2, requiresGrad: true });
  const step = async () => {
    const bt = b.transpose(-1, -2);
    const btt = bt.transpose(-1, -2);
    const out = mg.matmul(a, btt);
    const loss = out.sum();
    loss.backward();
    await a.grad!.data();
    for (const t of [bt, btt, out, loss]) t.dispose();
    a.zeroGrad();
    b.zeroGrad();
  };
  await step();
  const before = mg.memory();
  for (let i = 0; i < 3; i++) await step();
  const after = mg.memory();
  assert.equal(after.inUseBytes, before.inUseBytes, "bytes in use");
  assert.equal(after.liveTensors, before.liveTensors, "live tensors");
  a.dispose();
  b.dispose();
});

Deno.test("matmul backward works after the caller disposed its inputs", async () => {
  await gpu();
  const a = mg.randn([4, 3], { seed: 1, requiresGrad: true });
  const b = mg.randn([3, 2], { seed: 2, requiresGrad: true });
  const av = a.mul(1); // non-leaf input that the caller disposes before backward
  const out = mg.matmul(av, b);
  av.dispose();
  out.sum().backward();
  const ra = nd(await a.data(), [4, 3]);
  const rb = nd(await b.data(), [3, 2]);
  const [ga] = matmulVjpRef(ra, rb, nd(new Float32Array(8).fill(1), [4, 2]));
  assertClose(await a.grad!.data(), ga, { rtol: 1e-5, atol: 1e-6 }, "dA");
  for (const t of [a, b, out]) t.dispose();
});

Deno.test("matmul rejects bad operands with a MoongradError naming matmul, the argument and both shapes", async () => {
  await gpu();
  const f = mg.ones([2, 3]);
  const s = mg.tensor(2);
  const i = mg.ones([3, 2], { dtype: "i32" });
  const b0 = mg.ones([2, 2, 3]);
  const b1 = mg.ones([3, 3, 2]);
  const bad: [() => unknown, RegExp][] = [
    [() => mg.matmul(s, f), /matmul.*argument a.*rank 0.*\[\].*\[2, 3\]/],
    [() => mg.matmul(f, s), /matmul.*argument b.*rank 0.*\[2, 3\].*\[\]/],
    [
      () => mg.matmul(f, f),
      /matmul.*inner dimensions.*a has 3 columns, b has 2 rows.*\[2, 3\].*\[2, 3\]/,
    ],
    [() => mg.matmul(b0, b1), /matmul.*batch.*\[2\].*\[3\].*\[2, 2, 3\].*\[3, 3, 2\]/],
    [() => mg.matmul(f, i), /matmul.*argument b.*i32.*f32 or f16.*\[2, 3\].*\[3, 2\]/],
    [() => mg.matmul(i, f), /matmul.*argument a.*i32/],
  ];
  const h = (await gpu()).f16 ? mg.ones([3, 2], { dtype: "f16" }) : null;
  if (h) bad.push([() => mg.matmul(f, h), /matmul.*dtypes differ.*f32 \[2, 3\].*f16 \[3, 2\]/]);
  for (const [fn, re] of bad) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof mg.MoongradError, `expected MoongradError, got ${e}`);
      assert.match((e as Error).message, re);
      return true;
    });
  }
  for (const t of [f, s, i, b0, b1, h]) t?.dispose();
});
