/**
 * NaN and ±Inf through the reductions and topk against the float64 references, whose special
 * values are PyTorch's (checked against PyTorch 1.13): sum, mean and variance of a row with
 * NaN (or +Inf and −Inf) are NaN; max/min are NaN when the row holds one and argmax/argmin give
 * the first NaN's index; the max/min gradient is shared among the NaN positions then (what
 * torch.max() does); topk ranks NaN above +Inf. Random shapes cover short rows (≤ 16: one
 * thread per row) and long ones (one workgroup per row: NaN met in a lane and in the tree).
 */
import * as mg from "../mod.ts";
import { arbSpecialValues, assertClose, assertNoLeak, check, f32, fc, gpu } from "./util.ts";
import { nd, size } from "./reference/ndarray.ts";
import {
  argRef,
  extremumVjp,
  maxRef,
  meanRef,
  minRef,
  sumRef,
  varRef,
} from "./reference/reduce.ts";
import { topkRef } from "./reference/indexing.ts";

const EXACT = { rtol: 0, atol: 0 };
/** Sums of ≤ 2100 values of magnitude ≤ 3 on a 1/64 grid: f32 rounding ≤ ~1e-3 absolute. */
const SUM = { rtol: 1e-5, atol: 2e-3 };
/** Means and variances of such rows: rounding ≤ ~1e-5 relative of Σ|x| / n. */
const MEAN = { rtol: 1e-4, atol: 1e-5 };
/** Max/min gradients: g / count, one division. */
const GRAD = { rtol: 1e-6, atol: 1e-7 };

/** A shape of rank 1..3 whose last axis is short (1..7) or long (17..100), and values. */
const arbInput = fc.tuple(
  fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 0, maxLength: 2 }),
  fc.oneof(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 17, max: 100 })),
  fc.constantFrom(0.05, 0.2),
).chain(([lead, last, p]) => {
  const shape = [...lead, last];
  return fc.tuple(
    fc.constant(shape),
    arbSpecialValues(size(shape), p),
    fc.subarray([...shape.keys()], { minLength: 1 }),
  );
});

Deno.test("sum, mean, var, max, min over random axes with NaN and ±Inf match PyTorch (float64 ref)", async () => {
  await gpu();
  await check(arbInput, async ([shape, v, axes]) => {
    const before = mg.memory().inUseBytes;
    const x = f32(v, shape);
    const r = nd(v, shape);
    const what = `[${shape}] axes ${axes}`;
    const cases: [mg.Tensor, ReturnType<typeof nd>, { rtol: number; atol: number }, string][] = [
      [x.sum(axes), sumRef(r, axes, false), SUM, "sum"],
      [x.mean(axes), meanRef(r, axes, false), MEAN, "mean"],
      [x.var(axes, { correction: 0 }), varRef(r, axes, false, 0), MEAN, "var"],
      [x.max(axes), maxRef(r, axes, false), EXACT, "max"],
      [x.min(axes), minRef(r, axes, false), EXACT, "min"],
    ];
    for (const [t, want, tol, name] of cases) {
      assertClose(await t.data(), want, tol, `${name} ${what}`);
      t.dispose();
    }
    x.dispose();
    assertNoLeak(before, what);
  }, 30);
});

Deno.test("argmax/argmin: NaN wins with the first NaN's index, along an axis and flattened (PyTorch)", async () => {
  await gpu();
  await check(arbInput, async ([shape, v, axes]) => {
    const x = f32(v, shape);
    const r = nd(v, shape);
    const axis = axes[0];
    for (const which of ["max", "min"] as const) {
      const along = which === "max" ? x.argmax(axis) : mg.argmin(x, axis);
      const flat = which === "max" ? x.argmax() : mg.argmin(x);
      const what = `arg${which} [${shape}] axis ${axis}`;
      assertClose(await along.data(), argRef(r, [axis], false, which), EXACT, what);
      assertClose(await flat.data(), argRef(nd(v, [v.length]), [0], false, which), EXACT, what);
      along.dispose();
      flat.dispose();
    }
    x.dispose();
  }, 30);
});

Deno.test("max/min gradient: shared among tied extrema, among the NaN positions of a NaN row", async () => {
  await gpu();
  await check(arbInput, async ([shape, v, axes]) => {
    const before = mg.memory().inUseBytes;
    for (const which of ["max", "min"] as const) {
      const x = f32(v, shape, true);
      const out = which === "max" ? x.max(axes) : x.min(axes);
      const g = out.size === 0 ? [] : Array.from({ length: out.size }, (_, i) => 1 + (i % 5));
      const up = f32(g, out.shape);
      out.backward(up);
      const want = extremumVjp(nd(v, shape), axes, nd(g, out.shape), which);
      assertClose(await x.grad!.data(), want, GRAD, `${which}' [${shape}] axes ${axes}`);
      for (const t of [x, out, up]) t.dispose();
      x.zeroGrad();
    }
    assertNoLeak(before, "extremum grads");
  }, 20);
});

Deno.test("long rows (one workgroup): the first NaN wins across lanes and the tree; ±Inf rows", async () => {
  await gpu();
  const n = 300;
  const row = (fill: number, at: Record<number, number>) =>
    Array.from({ length: n }, (_, i) => (i in at ? at[i] : fill + (i % 7) / 8));
  const rows = [
    row(0, { 250: NaN, 200: NaN }), // NaNs in two lanes: the lower index wins in the tree
    row(0, { 64: NaN, 0: NaN }), // two NaNs in lane 0's loop: the first one met
    row(0, { 299: NaN }),
    row(0, { 10: Infinity, 150: Infinity, 20: -Infinity, 30: -Infinity }),
    Array.from({ length: n }, () => -Infinity),
    Array.from({ length: n }, () => NaN),
  ];
  const v = rows.flat();
  const x = f32(v, [rows.length, n], true);
  const r = nd(v, [rows.length, n]);
  for (const which of ["max", "min"] as const) {
    const val = which === "max" ? x.max(1) : x.min(1);
    const idx = which === "max" ? x.argmax(1) : mg.argmin(x, 1);
    assertClose(await val.data(), (which === "max" ? maxRef : minRef)(r, [1], false), EXACT, which);
    assertClose(await idx.data(), argRef(r, [1], false, which), EXACT, `arg${which}`);
    val.dispose();
    idx.dispose();
  }
  // The two NaNs of row 0 share its gradient.
  const m = x.max(1);
  m.sum().backward();
  const grad = await x.grad!.data();
  assertClose([grad[200], grad[250], grad[0]], [0.5, 0.5, 0], EXACT, "NaN positions share");
  for (const t of [x, m]) t.dispose();
  x.zeroGrad();
});

Deno.test("topk ranks NaN above +Inf (several NaNs by index), −Inf last, as PyTorch", async () => {
  await gpu();
  const arb = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 150 }))
    .chain(([rows, n]) =>
      fc.tuple(
        fc.constant([rows, n]),
        arbSpecialValues(rows * n, 0.3),
        fc.integer({ min: 1, max: n }),
      )
    );
  await check(arb, async ([shape, v, k]) => {
    const x = f32(v, shape);
    const { values, indices } = x.topk(k);
    const want = topkRef(nd(v, shape), k);
    assertClose(await values.data(), want.values, EXACT, `topk values [${shape}] k ${k}`);
    assertClose(await indices.data(), want.indices, EXACT, `topk indices [${shape}] k ${k}`);
    for (const t of [x, values, indices]) t.dispose();
  }, 20);
});
