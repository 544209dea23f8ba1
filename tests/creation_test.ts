/**
 * Creating tensors: from nested arrays, typed arrays and numbers; constants (zeros, ones,
 * full), ranges (arange), seeded random numbers (rand, randn) and f16 storage.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { arbShape, assertMgError, check, fc, gpu } from "./util.ts";
import { size } from "./reference/ndarray.ts";

/** Nested JS arrays of `shape` holding `flat` in row-major order. */
function nest(flat: number[], shape: readonly number[]): unknown {
  if (shape.length === 0) return flat[0];
  const step = size(shape.slice(1));
  return Array.from(
    { length: shape[0] },
    (_, i) => nest(flat.slice(i * step, (i + 1) * step), shape.slice(1)),
  );
}

Deno.test("tensor(nested arrays) round-trips through data() and toArray() for every rank", async () => {
  await gpu();
  await check(
    arbShape(4, 5).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.array(fc.float({ noNaN: true, noDefaultInfinity: true }), {
          minLength: size(s),
          maxLength: size(s),
        }),
      )
    ),
    async ([s, v]) => {
      const nested = nest(v, s) as mg.NestedNumbers;
      const t = mg.tensor(nested);
      assert.equal(t.dtype, "f32");
      assert.deepEqual(t.shape, s);
      assert.ok(t.isContiguous);
      // Exact round trip (−0 kept: values are already f32).
      assert.deepEqual(Array.from(await t.data()), v);
      assert.deepEqual(await t.toArray(), nested);
      t.dispose();
    },
    20,
  );
});

Deno.test("tensor from typed arrays with a shape; dtype inferred from the array type", async () => {
  await gpu();
  const f = mg.tensor(new Float32Array([1.5, -2, 3, 4, 5, 6]), { shape: [2, 3] });
  assert.deepEqual(await f.toArray(), [[1.5, -2, 3], [4, 5, 6]]);
  const i = mg.tensor(new Int32Array([7, -8, 2 ** 31 - 1, -(2 ** 31)]), { shape: [2, 2] });
  assert.equal(i.dtype, "i32");
  const id = await i.data();
  assert.ok(id instanceof Int32Array);
  assert.deepEqual(Array.from(id), [7, -8, 2 ** 31 - 1, -(2 ** 31)]);
  const b = mg.tensor(new Uint8Array([1, 0, 5]));
  assert.equal(b.dtype, "bool");
  const bd = await b.data();
  assert.ok(bd instanceof Uint8Array);
  assert.deepEqual(Array.from(bd), [1, 0, 1], "non-zero bytes read back as 1");
  const nb = mg.tensor([[true, false], [false, true]]);
  assert.equal(nb.dtype, "bool");
  assert.deepEqual(Array.from(await nb.data()), [1, 0, 0, 1]);
  const asI = mg.tensor(new Float32Array([1, -1, 3]), { dtype: "i32" });
  assert.deepEqual(Array.from(await asI.data()), [1, -1, 3], "i32 from whole floats");
  for (const bad of [1.9, -1.9, NaN, Infinity, 2 ** 31, -(2 ** 31) - 1]) {
    assertMgError(() => mg.tensor([3, bad], { dtype: "i32" }), "tensor", String(bad), "position 1");
  }
  const s = mg.tensor(2.5);
  assert.deepEqual(s.shape, []);
  assert.equal(await s.item(), 2.5);
  const e = mg.tensor([]);
  assert.deepEqual(e.shape, [0]);
  assert.equal((await e.data()).length, 0);
  const g = mg.tensor([1, 2], { requiresGrad: true });
  assert.equal(g.requiresGrad, true);
  for (const t of [f, i, b, nb, asI, s, e, g]) t.dispose();
});

Deno.test("tensor rejects ragged arrays naming the index, bad shapes, and bad dtypes", async () => {
  await gpu();
  assertMgError(() => mg.tensor([[1, 2], [3]]), "tensor", "[1]", "length 1", "expected 2");
  assertMgError(() => mg.tensor([[[1], [2]], [[3], [4, 5]]]), "tensor", "[1, 1]", "length 2");
  assertMgError(() => mg.tensor([[1, 2], 3] as mg.NestedNumbers), "tensor", "[1]", "not an array");
  assertMgError(() => mg.tensor([1, [2]] as mg.NestedNumbers), "tensor", "[1]");
  assertMgError(() => mg.tensor(["a"] as unknown as mg.NestedNumbers), "tensor", "[0]");
  assertMgError(() => mg.tensor(new Float32Array(6), { shape: [4, 2] }), "tensor", "[4, 2]", "6");
  assertMgError(() => mg.tensor([1, 2, 3], { shape: [2, 2] }), "tensor", "[2, 2]", "3");
  assertMgError(() => mg.tensor([1], { dtype: "f64" as mg.DType }), "tensor", "f64");
  assertMgError(() => mg.tensor(new Float32Array(2), { shape: [-2, -1] }), "tensor", "-2");
  assertMgError(
    () => mg.tensor([1, 2], { dtype: "i32", requiresGrad: true }),
    "tensor",
    "requiresGrad",
    "i32",
  );
});

Deno.test("zeros, ones, full for every dtype and shape (rank 0 and empty included)", async () => {
  await gpu();
  await check(
    fc.tuple(
      arbShape(4, 5),
      fc.constantFrom<mg.DType>("f32", "i32", "bool"),
      fc.integer({ min: -100, max: 100 }),
    ),
    async ([s, dtype, v]) => {
      const z = mg.zeros(s, { dtype });
      const o = mg.ones(s, { dtype });
      const f = mg.full(s, dtype === "i32" ? v : v + 0.25, { dtype });
      if (dtype === "i32") assertMgError(() => mg.full(s, v + 0.25, { dtype }), "full", "i32");
      for (const t of [z, o, f]) {
        assert.deepEqual(t.shape, s);
        assert.equal(t.dtype, dtype);
      }
      // i32 takes whole values only (a fraction is an error); bool is value != 0.
      const fv = dtype === "f32" ? v + 0.25 : dtype === "i32" ? v : 1;
      assert.deepEqual(Array.from(await z.data()), new Array(size(s)).fill(0));
      assert.deepEqual(Array.from(await o.data()), new Array(size(s)).fill(1));
      assert.deepEqual(Array.from(await f.data()), new Array(size(s)).fill(fv));
      for (const t of [z, o, f]) t.dispose();
    },
    20,
  );
  const e = mg.zeros([3, 0, 2]);
  assert.equal(e.size, 0);
  assert.equal((await e.data()).length, 0);
  const like = mg.onesLike(mg.zeros([2, 2], { dtype: "i32" }));
  assert.equal(like.dtype, "i32");
  assertMgError(() => mg.zeros([2, -1]), "zeros", "[2,-1]");
  assertMgError(() => mg.full([2], "x" as unknown as number), "full", "number");
  e.dispose();
  like.dispose();
});

Deno.test("arange like NumPy: one argument, float and negative steps, i32", async () => {
  await gpu();
  const cases: [mg.Tensor, number[]][] = [
    [mg.arange(5), [0, 1, 2, 3, 4]],
    [mg.arange(2, 7, 2), [2, 4, 6]],
    [mg.arange(5, 0, -1.5), [5, 3.5, 2, 0.5]],
    [mg.arange(0, 1, 0.25), [0, 0.25, 0.5, 0.75]],
    [mg.arange(3, 3), []],
    [mg.arange(3, 1), []],
    [mg.arange(-3, 3, 2, { dtype: "i32" }), [-3, -1, 1]],
  ];
  for (const [t, want] of cases) {
    assert.deepEqual(t.shape, [want.length]);
    assert.deepEqual(Array.from(await t.data()), want);
    t.dispose();
  }
  assertMgError(() => mg.arange(0, 5, 0), "arange", "step");
  assertMgError(() => mg.arange(0, Infinity), "arange", "Infinity");
  assertMgError(() => mg.arange(3, undefined, 1, { dtype: "f64" as mg.DType }), "arange", "f64");
});

// ---- random -------------------------------------------------------------------------------

Deno.test("rand/randn: same seed → identical numbers, different seeds and calls differ", async () => {
  await gpu();
  for (const fn of [mg.rand, mg.randn]) {
    const a = fn([257, 3], { seed: 42 });
    const b = fn([257, 3], { seed: 42 });
    const c = fn([257, 3], { seed: 43 });
    const big = fn([300, 3], { seed: 42 });
    const da = await a.data();
    assert.deepEqual(da, await b.data(), "same seed");
    const dc = await c.data();
    assert.ok(
      da.filter((v, i) => v !== dc[i]).length > 700,
      "different seeds differ nearly everywhere",
    );
    // A counter-based generator: element i depends on (seed, i) only, not on the shape.
    assert.deepEqual(Array.from(await big.data()).slice(0, da.length), Array.from(da));
    // Without a seed, successive calls draw different numbers; manualSeed makes them repeat.
    mg.manualSeed(7);
    const u1 = fn([64]);
    const u2 = fn([64]);
    mg.manualSeed(7);
    const u3 = fn([64]);
    const [d1, d2, d3] = [await u1.data(), await u2.data(), await u3.data()];
    assert.notDeepEqual(d1, d2);
    assert.deepEqual(d1, d3);
    for (const t of [a, b, c, big, u1, u2, u3]) t.dispose();
  }
  assertMgError(() => mg.rand([2], { seed: 1.5 }), "rand", "1.5");
  assertMgError(() => mg.randn([2], { dtype: "i32" }), "randn", "i32");
});

/**
 * Statistics of 100 000 draws (seeded, so deterministic). Tolerances are 5 standard errors:
 * uniform mean 0.5 ± 5·0.2887/√n = ±0.0046; each of 10 bins 0.1 ± 5·√(0.09/n) = ±0.0047;
 * normal mean 0 ± 5/√n = ±0.016; std 1 ± 5/√(2n) = ±0.011; P(|z| < 1) = 0.6827 ± 0.0074;
 * P(|z| < 2) = 0.9545 ± 0.0033.
 */
Deno.test("rand is uniform on [0, 1) and randn is standard normal (100k samples, 5σ bounds)", async () => {
  await gpu();
  const n = 100_000;
  const u = mg.rand([n], { seed: 123 });
  const du = await u.data();
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  const bins = new Array(10).fill(0);
  for (const v of du) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
    bins[Math.min(9, Math.floor(v * 10))]++;
  }
  assert.ok(min >= 0 && max < 1, `rand in [0, 1): min ${min}, max ${max}`);
  assert.ok(Math.abs(sum / n - 0.5) < 0.0046, `rand mean ${sum / n}`);
  for (const b of bins) assert.ok(Math.abs(b / n - 0.1) < 0.0047, `bin ${b / n}`);
  const r = mg.rand([1000], { seed: 5, low: -2, high: 3 });
  const dr = await r.data();
  assert.ok(dr.every((v) => v >= -2 && v < 3) && Math.min(...dr) < -1.9 && Math.max(...dr) > 2.9);

  const g = mg.randn([n], { seed: 321 });
  const dg = await g.data();
  let s1 = 0;
  let s2 = 0;
  let in1 = 0;
  let in2 = 0;
  for (const v of dg) {
    assert.ok(Number.isFinite(v));
    s1 += v;
    s2 += v * v;
    if (Math.abs(v) < 1) in1++;
    if (Math.abs(v) < 2) in2++;
  }
  const mean = s1 / n;
  const std = Math.sqrt(s2 / n - mean * mean);
  assert.ok(Math.abs(mean) < 0.016, `randn mean ${mean}`);
  assert.ok(Math.abs(std - 1) < 0.011, `randn std ${std}`);
  assert.ok(Math.abs(in1 / n - 0.6827) < 0.0074, `P(|z|<1) ${in1 / n}`);
  assert.ok(Math.abs(in2 / n - 0.9545) < 0.0033, `P(|z|<2) ${in2 / n}`);
  const ms = mg.randn([n], { seed: 9, mean: 3, std: 0.5 });
  const dms = await ms.data();
  const m2 = Array.from(dms).reduce((a, b) => a + b, 0) / n;
  assert.ok(Math.abs(m2 - 3) < 0.008, `randn(mean 3, std 0.5) mean ${m2}`);
  for (const t of [u, r, g, ms]) t.dispose();
});

// ---- f16 ----------------------------------------------------------------------------------

Deno.test("f16 storage: round trip rounds to nearest f16; creation and ops keep f16", async () => {
  const info = await gpu();
  if (!info.f16) {
    // Without shader-f16, f16 requests fail with a clear error.
    assertMgError(() => mg.zeros([2], { dtype: "f16" }), "zeros", "shader-f16");
    return;
  }
  const v = [0, 1, -2.5, 65504, 1e-4, 0.1, 3.14159, -70000];
  const t = mg.tensor(v, { dtype: "f16" });
  assert.equal(t.dtype, "f16");
  assert.equal(t.storage().byteLength, 2 * v.length, "two bytes per element");
  // Expected: JS's own round-to-nearest-even f16 conversion (−70000 overflows to −inf).
  assert.deepEqual(Array.from(await t.data()), Array.from(Float16Array.from(v)));
  const o = mg.ones([3], { dtype: "f16" });
  const f = mg.full([2], 0.1, { dtype: "f16" });
  assert.deepEqual(Array.from(await o.data()), [1, 1, 1]);
  assert.deepEqual(Array.from(await f.data()), Array.from(Float16Array.from([0.1, 0.1])));
  const r = mg.rand([65536], { dtype: "f16", seed: 1 }); // ~16 draws would round to 1 without 11-bit units
  const dr = await r.data();
  assert.ok(dr.every((x) => x >= 0 && x < 1), `f16 rand in [0, 1): max ${Math.max(...dr)}`);
  const a = mg.arange(4, undefined, 1, { dtype: "f16" });
  assert.equal(a.dtype, "f16");
  // An op in f16, then a cast back to f32: sum of f16 ones and 0.1s.
  const s = o.sum().cast("f32");
  assert.equal(await s.item(), 3);
  const m = t.slice(0, 0, 4).mul(2);
  assert.equal(m.dtype, "f16");
  assert.deepEqual(Array.from(await m.data()), [0, 2, -5, Infinity], "65504·2 overflows f16");
  const back = t.cast("f32");
  assert.deepEqual(Array.from(await back.data()), Array.from(Float16Array.from(v)));
  for (const x of [t, o, f, r, a, s, m, back]) x.dispose();
});
