/**
 * Reductions against float64 references: sum, mean, max, min, argmax, argmin, variance and
 * sumTo over random axis sets (given as one axis, a list in any order, negative, or all),
 * with and without keepDims, on strided views, for short rows (≤ 16: one thread per row)
 * and long rows (> 64: one workgroup per row). Backward: GPU vs reference vjp, and the
 * reference vjp vs central finite differences in float64.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import {
  applyView,
  arbBroadcastPair,
  arbShape,
  arbValues,
  assertClose,
  assertMgError,
  assertNoLeak,
  check,
  f32,
  fc,
  gpu,
} from "./util.ts";
import {
  broadcastShape,
  broadcastTo,
  dot,
  map,
  nd,
  type NDArray,
  numericGrad,
  reduceAxes,
  size,
  sumTo,
} from "./reference/ndarray.ts";
import { viewCase, viewForward, type ViewKind, viewVjp } from "./reference/elementwise.ts";
import {
  argRef,
  extremumVjp,
  maxRef,
  meanRef,
  meanVjp,
  minRef,
  sumRef,
  sumVjp,
  varRef,
  varVjp,
} from "./reference/reduce.ts";

// ---- helpers ------------------------------------------------------------------------------

const KINDS: ViewKind[] = ["plain", "transposed", "sliced", "expanded"];
const U = 2 ** -24; // unit roundoff of f32

/** How axes are passed: all (undefined), one number, or a list (shuffled, some negative). */
type AxesArg = number | number[] | undefined;

/** A random axes argument for rank `r` and the sorted non-negative axes it means. */
function arbAxes(r: number): fc.Arbitrary<{ arg: AxesArg; axes: number[] }> {
  const all = [...Array(r).keys()];
  return fc.oneof(
    fc.constant({ arg: undefined as AxesArg, axes: all }),
    r === 0 ? fc.constant({ arg: undefined as AxesArg, axes: all }) : fc.tuple(
      fc.integer({ min: 0, max: r - 1 }),
      fc.boolean(),
    ).map(([a, neg]) => ({ arg: (neg ? a - r : a) as AxesArg, axes: [a] })),
    fc.shuffledSubarray(all).chain((sub) =>
      fc.array(fc.boolean(), { minLength: sub.length, maxLength: sub.length }).map((negs) => ({
        arg: sub.map((a, i) => (negs[i] ? a - r : a)) as AxesArg,
        axes: [...sub].sort((x, y) => x - y),
      }))
    ),
  );
}

/** Asserts |actual − expected| ≤ bound[i] elementwise, with equal shapes. */
async function assertWithin(
  t: mg.Tensor,
  want: NDArray,
  bound: ArrayLike<number>,
  what: string,
): Promise<void> {
  assert.deepEqual([...t.shape], [...want.shape], `${what}: shape`);
  const got = await t.data();
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want.data[i]);
    if (!(err <= bound[i])) {
      throw new Error(
        `${what}: index ${i}: got ${got[i]}, expected ${want.data[i]} (bound ${bound[i]})`,
      );
    }
  }
}

/**
 * Error bound of an f32 sum of n terms: (n − 1)·u·Σ|xᵢ| for any summation order (the
 * classic worst case of recursive summation), plus one final rounding. Tight enough to
 * catch a missing or doubled term of typical size, and it cannot fail on rounding alone.
 */
function sumBound(x: NDArray, axes: number[], keepDims: boolean, scale = 1): number[] {
  const n = axes.reduce((k, a) => k * x.shape[a], 1);
  const abs = reduceAxes(map(x, Math.abs), axes, keepDims, (v) => v.reduce((a, b) => a + b, 0));
  return Array.from(abs.data, (s) => ((n + 1) * U * s + 1e-30) * scale);
}

/** Moves values apart so that no two are within `gap` (ties make max/min non-differentiable). */
function untied(x: NDArray, gap: number): NDArray | null {
  const y = map(x, (v, i) => v + 0.01 * i);
  const s = [...y.data].sort((a, b) => a - b);
  for (let i = 1; i < s.length; i++) if (s[i] - s[i - 1] < gap) return null;
  return y;
}

const H = 1e-5;
/** Reference vjp vs central differences: the functions are (piecewise) polynomial of degree ≤ 2. */
const FD_TOL = { rtol: 1e-5, atol: 1e-5 };

/** A view case with random logical shape, values, upstream, axes, keepDims. */
function arbReduceCase(maxRank: number, maxDim: number, lo = -3, hi = 3) {
  return fc.tuple(arbShape(maxRank, maxDim), fc.constantFrom(...KINDS), fc.nat(7)).chain(
    ([s, k, a]) => {
      const c = viewCase(k, s, a);
      return fc.tuple(
        fc.constant(c),
        arbValues(size(c.baseShape), lo, hi),
        arbAxes(s.length),
        fc.boolean(),
      );
    },
  );
}

/** Upstream gradient values for an output shape (deterministic, non-zero, varied). */
function upstream(shape: readonly number[]): NDArray {
  return nd(
    Array.from({ length: size(shape) }, (_, i) => Math.fround(Math.sin(3 * i + 1) + 0.25)),
    shape,
  );
}

// ---- sum / mean -----------------------------------------------------------------------------

for (const op of ["sum", "mean"] as const) {
  Deno.test(
    `${op} over random axes with keepDims on views: forward within the f32 summation bound, exact backward`,
    async () => {
      await gpu();
      await check(arbReduceCase(4, 6), async ([c, bv, { arg, axes }, keep]) => {
        const before = mg.memory().inUseBytes;
        const base = f32(bv, c.baseShape, true);
        const x = applyView(c, base);
        const xr = viewForward(c, nd(bv, c.baseShape));
        const out = op === "sum" ? x.sum(arg, keep) : x.mean(arg, keep);
        const n = axes.reduce((k, a) => k * c.shape[a], 1);
        const want = (op === "sum" ? sumRef : meanRef)(xr, axes, keep);
        const bound = sumBound(xr, axes, keep, op === "mean" ? 1 / n : 1);
        if (op === "mean") {
          for (let i = 0; i < bound.length; i++) bound[i] += 2 * U * Math.abs(want.data[i]);
        }
        const what = `${op} ${c.kind} [${c.shape}] axes ${JSON.stringify(arg)} keep ${keep}`;
        await assertWithin(out, want, bound, what);
        const up = upstream(want.shape);
        const upT = f32(up.data, up.shape);
        out.backward(upT);
        const gref = (op === "sum" ? sumVjp : meanVjp)(xr, axes, up);
        // sum's gradient is a copy of the upstream; mean's is one f32 division by n (plus
        // the view's own sumTo for expanded inputs): rtol 1e-6.
        assertClose(await base.grad!.data(), viewVjp(c, gref), { rtol: 1e-6, atol: 1e-6 }, what);
        const f = (v: NDArray) => dot((op === "sum" ? sumRef : meanRef)(v, axes, keep), up);
        assertClose(gref.data, numericGrad(f, xr, H).data, FD_TOL, `${op} ref vjp vs fd`);
        for (const t of [base, x, out, upT]) t.dispose();
        base.zeroGrad();
        assertNoLeak(before, what);
      }, 20);
    },
  );
}

Deno.test("sum over long rows (65..300, one workgroup per row) and short rows (≤ 16)", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.integer({ min: 1, max: 4 }),
      fc.oneof(fc.integer({ min: 65, max: 300 }), fc.integer({ min: 1, max: 16 })),
      fc.boolean(),
    ).chain(([outer, inner, transposed]) =>
      fc.tuple(
        fc.constant([outer, inner, transposed] as const),
        arbValues(outer * inner),
      )
    ),
    async ([[outer, inner, transposed], v]) => {
      // transposed: the reduced axis is not innermost in memory (exercises the permuting copy).
      const base = transposed ? f32(v, [inner, outer]) : f32(v, [outer, inner]);
      const x = transposed ? base.transpose() : base;
      const xr = transposed
        ? viewForward(viewCase("transposed", [outer, inner], 0), nd(v, [inner, outer]))
        : nd(v, [outer, inner]);
      for (
        const [t, want, bound] of [
          [x.sum(1), sumRef(xr, [1], false), sumBound(xr, [1], false)],
          [
            x.mean(-1, true),
            meanRef(xr, [1], true),
            sumBound(xr, [1], true, 1 / inner).map((b, i) =>
              b + 2 * U * Math.abs(meanRef(xr, [1], true).data[i])
            ),
          ],
          [x.sum(), sumRef(xr, [0, 1], false), sumBound(xr, [0, 1], false)],
        ] as const
      ) {
        await assertWithin(t, want, bound, `[${outer}, ${inner}] transposed ${transposed}`);
        t.dispose();
      }
      for (
        const [t, want] of [
          [x.max(1), maxRef(xr, [1], false)],
          [x.min(1), minRef(xr, [1], false)],
          [x.argmax(1), argRef(xr, [1], false, "max")],
          [mg.argmin(x, 1), argRef(xr, [1], false, "min")],
        ] as const
      ) {
        assert.deepEqual(
          Array.from(await t.data(), (v) => v + 0), // −0 and 0 are the same extremum
          Array.from(want.data, (v) => v + 0),
          `extremum [${outer}, ${inner}]`,
        );
        t.dispose();
      }
      base.dispose();
      x.dispose();
    },
    25,
  );
});

Deno.test("sum of 100 000 ones and of alternating ±1 rows is exact (long-row tree reduction)", async () => {
  await gpu();
  const ones = mg.ones([100_000]);
  assert.equal(await ones.sum().item(), 100_000);
  const alt = mg.tensor(Float32Array.from({ length: 3 * 1001 }, (_, i) => (i % 2 ? -1 : 1)), {
    shape: [3, 1001],
  });
  assert.deepEqual(Array.from(await alt.sum(1).data()), [1, -1, 1]);
  ones.dispose();
  alt.dispose();
});

// ---- max / min ----------------------------------------------------------------------------

for (const op of ["max", "min"] as const) {
  Deno.test(
    `${op} over random axes: exact forward, gradient shared equally among ties (rtol 1e-6)`,
    async () => {
      await gpu();
      await check(
        fc.tuple(arbReduceCase(4, 6), fc.boolean()),
        async ([[c, bv0, { arg, axes }, keep], coarse]) => {
          const before = mg.memory().inUseBytes;
          // coarse: values on a grid of 0.5 in [-1, 1], so ties are frequent.
          const bv = coarse ? bv0.map((v) => Math.round(v / 3 * 2) / 2) : bv0;
          const base = f32(bv, c.baseShape, true);
          const x = applyView(c, base);
          const xr = viewForward(c, nd(bv, c.baseShape));
          const out = op === "max" ? x.max(arg, keep) : x.min(arg, keep);
          const want = (op === "max" ? maxRef : minRef)(xr, axes, keep);
          const what = `${op} ${c.kind} [${c.shape}] axes ${JSON.stringify(arg)} keep ${keep}`;
          assert.deepEqual([...out.shape], [...want.shape], what);
          // Exact (−0 and 0 count as equal).
          assert.deepEqual(
            Array.from(await out.data(), (v) => v + 0),
            Array.from(want.data, (v) => v + 0),
            what,
          );
          const up = upstream(want.shape);
          const upT = f32(up.data, up.shape);
          out.backward(upT);
          const gref = extremumVjp(xr, axes, up, op);
          assertClose(await base.grad!.data(), viewVjp(c, gref), { rtol: 1e-6, atol: 1e-6 }, what);
          // Finite differences only where there are no ties (a k-way tie has one-sided slopes).
          const xu = untied(xr, 4 * H);
          if (xu) {
            const f = (v: NDArray) => dot((op === "max" ? maxRef : minRef)(v, axes, keep), up);
            const gu = extremumVjp(xu, axes, up, op);
            assertClose(gu.data, numericGrad(f, xu, H).data, FD_TOL, `${op} ref vjp vs fd`);
          }
          for (const t of [base, x, out, upT]) t.dispose();
          base.zeroGrad();
          assertNoLeak(before, what);
        },
        20,
      );
    },
  );
}

Deno.test("max gradient with a 3-way tie gives each tied element 1/3", async () => {
  await gpu();
  const x = mg.tensor([[1, 4, 4, 0, 4], [2, 2, 1, 0, -1]], { requiresGrad: true });
  const m = x.max(1);
  m.backward(mg.tensor([3, 1]));
  assertClose(await x.grad!.data(), [0, 1, 1, 0, 1, 0.5, 0.5, 0, 0, 0], {
    rtol: 1e-6,
    atol: 0,
  }, "ties");
  x.dispose();
  m.dispose();
});

// ---- argmax / argmin ----------------------------------------------------------------------

Deno.test("argmax/argmin along one axis or flattened, ties → first index, i32 output", async () => {
  await gpu();
  await check(
    fc.tuple(arbShape(4, 6), fc.constantFrom(...KINDS), fc.nat(7)).chain(([s, k, a]) => {
      const c = viewCase(k, s, a);
      return fc.tuple(
        fc.constant(c),
        // Integers in −2..2: many ties.
        fc.array(fc.integer({ min: -2, max: 2 }), {
          minLength: size(c.baseShape),
          maxLength: size(c.baseShape),
        }),
        s.length === 0 ? fc.constant(undefined) : fc.option(
          fc.integer({ min: -s.length, max: s.length - 1 }),
          { nil: undefined },
        ),
        fc.boolean(),
        fc.constantFrom<mg.DType>("f32", "i32"),
      );
    }),
    async ([c, bv, axis, keep, dtype]) => {
      const base = mg.tensor(bv, { shape: c.baseShape, dtype });
      const x = applyView(c, base);
      const xr = viewForward(c, nd(bv, c.baseShape));
      const r = c.shape.length;
      for (const which of ["max", "min"] as const) {
        const out = which === "max" ? x.argmax(axis, keep) : mg.argmin(x, axis, keep);
        assert.equal(out.dtype, "i32");
        let want: NDArray;
        if (axis === undefined) {
          const flat = argRef(nd(xr.data, [xr.size]), [0], false, which);
          want = nd(flat.data, keep ? c.shape.map(() => 1) : []);
        } else {
          const ax = axis < 0 ? axis + r : axis;
          want = argRef(xr, [ax], keep, which);
        }
        const what = `arg${which} ${dtype} ${c.kind} [${c.shape}] axis ${axis} keep ${keep}`;
        assert.deepEqual([...out.shape], [...want.shape], what);
        assert.deepEqual(Array.from(await out.data()), Array.from(want.data), what);
        out.dispose();
      }
      base.dispose();
      x.dispose();
    },
    25,
  );
});

// ---- variance -----------------------------------------------------------------------------

Deno.test("variance with correction 0 and 1 over random axes: forward and backward (rtol 1e-5)", async () => {
  await gpu();
  await check(
    fc.tuple(arbReduceCase(4, 6), fc.constantFrom(0, 1)),
    async ([[c, bv, { arg, axes }, keep], correction]) => {
      const n = axes.reduce((k, a) => k * c.shape[a], 1);
      if (n - correction <= 0) return; // undefined (NaN), tested separately
      const before = mg.memory().inUseBytes;
      const base = f32(bv, c.baseShape, true);
      const x = applyView(c, base);
      const xr = viewForward(c, nd(bv, c.baseShape));
      const out = x.var(arg, { correction, keepDims: keep });
      const want = varRef(xr, axes, keep, correction);
      const what = `var ${c.kind} [${c.shape}] axes ${JSON.stringify(arg)} c ${correction}`;
      // Two-pass variance: the mean's error (bounded like a sum) enters squared only; the
      // sum of squares is bounded by (n+1)·u·Σ(x−m)²; inputs ≤ 3 → atol 1e-5·(1 + value).
      const maxAbs = Math.max(...xr.data.map(Math.abs));
      await assertWithin(
        out,
        want,
        Array.from(
          want.data,
          (v) => 4 * (n + 2) * U * (Math.abs(v) + maxAbs * maxAbs * 1e-3) + 1e-6,
        ),
        what,
      );
      const up = upstream(want.shape);
      const upT = f32(up.data, up.shape);
      out.backward(upT);
      const gref = varVjp(xr, axes, up, correction);
      // The gradient runs through mean, sub, square, sum and div: a handful of roundings
      // of terms ≤ 2·6·1.25: atol 1e-5, rtol 1e-5.
      assertClose(await base.grad!.data(), viewVjp(c, gref), { rtol: 1e-5, atol: 1e-5 }, what);
      const f = (v: NDArray) => dot(varRef(v, axes, keep, correction), up);
      assertClose(gref.data, numericGrad(f, xr, H).data, FD_TOL, "var ref vjp vs fd");
      for (const t of [base, x, out, upT]) t.dispose();
      base.zeroGrad();
      assertNoLeak(before, what);
    },
    20,
  );
});

Deno.test("variance of one element with correction 1 is NaN; with correction 0 it is 0", async () => {
  await gpu();
  const x = mg.tensor([[2.5], [1]]);
  const v1 = x.var(1);
  const v0 = x.var(1, { correction: 0 });
  assert.ok(Array.from(await v1.data()).every(Number.isNaN));
  assert.deepEqual(Array.from(await v0.data()), [0, 0]);
  for (const t of [x, v1, v0]) t.dispose();
});

// ---- sumTo --------------------------------------------------------------------------------

Deno.test("sumTo reduces a broadcast back to its shape; its backward broadcasts (exact)", async () => {
  await gpu();
  await check(
    arbBroadcastPair(4, 5).chain(([sa, sb]) => {
      const full = broadcastShape(sa, sb);
      return fc.tuple(fc.constant(sa), fc.constant(full), arbValues(size(full)));
    }),
    async ([target, shape, v]) => {
      const before = mg.memory().inUseBytes;
      const g = f32(v, shape, true);
      const out = mg.sumTo(g, target);
      const want = sumTo(nd(v, shape), target);
      const totalAbs = v.reduce((a, b) => a + Math.abs(b), 0);
      const bound = new Array(want.size).fill((size(shape) + 1) * U * totalAbs);
      await assertWithin(out, want, bound, `sumTo [${shape}] → [${target}]`);
      const up = upstream(target);
      const upT = f32(up.data, target);
      if (out.requiresGrad) {
        out.backward(upT);
        const grad = broadcastTo(up, shape);
        assertClose(await g.grad!.data(), grad, { rtol: 0, atol: 0 }, "sumTo backward");
      }
      for (const t of [g, out, upT]) t.dispose();
      g.zeroGrad();
      assertNoLeak(before, "sumTo");
    },
    20,
  );
});

// ---- integers, rank 0, errors -------------------------------------------------------------

Deno.test("i32 sum, max, min are exact; rank-0 tensors reduce to themselves", async () => {
  await gpu();
  const v = Int32Array.from({ length: 6 * 70 }, (_, i) => ((i * 7919) % 201) - 100);
  const x = mg.tensor(v, { shape: [6, 70] });
  const xr = nd(v, [6, 70]);
  for (
    const [t, want] of [
      [x.sum(1), sumRef(xr, [1], false)],
      [x.sum(0, true), sumRef(xr, [0], true)],
      [x.max([0, 1]), maxRef(xr, [0, 1], false)],
      [x.min(-1), minRef(xr, [1], false)],
    ] as const
  ) {
    assert.equal(t.dtype, "i32");
    assert.deepEqual(Array.from(await t.data()), Array.from(want.data));
    t.dispose();
  }
  const s = mg.tensor(3.5, { requiresGrad: true });
  for (const t of [s.sum(), s.sum(0), s.mean(), s.max(0), s.min()]) {
    assert.deepEqual(t.shape, []);
    assert.equal(await t.item(), 3.5);
    t.dispose();
  }
  const am = s.argmax(0);
  assert.equal(await am.item(), 0);
  const sm = s.sum(0);
  sm.backward();
  assert.equal(await s.grad!.item(), 1);
  for (const t of [x, s, am, sm]) t.dispose();
});

Deno.test("reductions reject bad input with MoongradError naming the op", async () => {
  await gpu();
  const x = mg.zeros([2, 3]);
  const b = mg.tensor([true, false]);
  const i = mg.zeros([2], { dtype: "i32" });
  const e = mg.zeros([2, 0]);
  assertMgError(() => x.sum(2), "sum", "2", "rank 2");
  assertMgError(() => x.sum([0, -2]), "sum", "repeat");
  assertMgError(() => b.sum(), "sum", "bool");
  assertMgError(() => i.mean(), "mean", "i32");
  assertMgError(() => i.var(), "var", "i32");
  assertMgError(() => e.max(1), "max", "[2, 0]");
  assertMgError(() => e.argmax(1), "argmax", "[2, 0]");
  assertMgError(() => x.argmax(5), "argmax", "5");
  assertMgError(() => mg.sumTo(x, [4, 2, 3]), "sumTo", "[2, 3]", "[4, 2, 3]");
  assertMgError(() => mg.sumTo(x, [2, 2]), "sumTo", "[2, 3]", "[2, 2]");
  // Empty sums are 0.
  const es = e.sum(1);
  assert.deepEqual(Array.from(await es.data()), [0, 0]);
  for (const t of [x, b, i, e, es]) t.dispose();
});
