import * as mg from "../mod.ts";
import {
  arbShape,
  arbValues,
  assertClose,
  assertTensorClose,
  check,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import { dot, nd, type NDArray, numericGrad, permute } from "./reference/ndarray.ts";
import { logSoftmaxRef, logSoftmaxVjp, softmaxRef, softmaxVjp } from "./reference/softmax.ts";

// Tolerances. f32 softmax: every output is exp(v − max) / Σ, a few roundings plus the row
// sum, so 1e-5 relative + 1e-7 absolute (for outputs that underflow towards 0) on short
// rows. log-softmax outputs are differences (v − max − log Σ): absolute error ~ ulp of the
// largest term, so 2e-6 absolute + 1e-5 relative. Long rows (33..700, |v − max| ≤ 16): a GPU
// exp may lose ~|v − max|·2^-23 ≈ 2e-6 relative and the tree sum ~log2(n) ulps, so 2e-5
// relative (4e-6 absolute for log-softmax); llvmpipe meets 1e-5.
// f16 stores outputs with a 2^-11 relative rounding: 2e-3.
const SHORT = { rtol: 1e-5, atol: 1e-7 };
const SHORT_LOG = { rtol: 1e-5, atol: 2e-6 };
const LONG = { rtol: 2e-5, atol: 1e-8 };
const LONG_LOG = { rtol: 2e-5, atol: 4e-6 };
const F16 = { rtol: 2e-3, atol: 2e-3 };
// Gradients: dx = y ⊙ (g − Σ g⊙y) cancels when g ≈ Σ g⊙y, so an absolute term scaled to
// |g| ≤ 3 (3 · 2^-23 ≈ 4e-7, a few roundings): 2e-6.
const GRAD = { rtol: 1e-5, atol: 2e-6 };
const GRAD_LONG = { rtol: 2e-5, atol: 4e-6 };
// Reference vjp vs central differences in float64 (h = 1e-6: error ~1e-10).
const NUMERIC = { rtol: 1e-6, atol: 1e-8 };

/** Deep equality through JSON (enough for numbers, arrays and strings). */
function assertEquals(actual: unknown, expected: unknown, what = ""): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, expected ${e}`);
}

/** Asserts `fn` throws a MoongradError whose message includes `includes`. */
function assertThrows(fn: () => unknown, _cls: unknown, includes: string): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected MoongradError, got ${e}`);
    if (!e.message.includes(includes)) {
      throw new Error(`error "${e.message}" does not include "${includes}"`);
    }
    return;
  }
  throw new Error(`expected a MoongradError including "${includes}", nothing was thrown`);
}

const OPS = [
  { name: "softmax", run: mg.softmax, ref: softmaxRef, vjp: softmaxVjp },
  { name: "logSoftmax", run: mg.logSoftmax, ref: logSoftmaxRef, vjp: logSoftmaxVjp },
] as const;

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** A shape, an axis of it (maybe negative), values, and upstream-gradient values. */
const arbCase = (maxRank: number, maxDim: number) =>
  arbShape(maxRank, maxDim).chain((shape) =>
    fc.tuple(
      fc.constant(shape),
      fc.integer({ min: -Math.max(shape.length, 1), max: Math.max(shape.length, 1) - 1 }),
      arbValues(size(shape), -6, 6),
      arbValues(size(shape), -3, 3),
    )
  );

Deno.test("softmax/logSoftmax forward match float64 on random shapes and axes (f32, rtol 1e-5)", async () => {
  await gpu();
  await check(arbCase(4, 7), async ([shape, axis, v]) => {
    const x = mg.tensor(new Float32Array(v), { shape });
    for (const op of OPS) {
      const y = op.run(x, axis);
      const tol = op.name === "softmax" ? SHORT : SHORT_LOG;
      await assertTensorClose(y, op.ref(nd(v, shape), axis), tol, `${op.name} [${shape}] ${axis}`);
      y.dispose();
    }
    x.dispose();
  }, 20);
});

Deno.test("softmax/logSoftmax long rows (33..700: 8..128 lanes per row) along the last and a leading axis (rtol 2e-5)", async () => {
  await gpu();
  const arb = fc.tuple(
    fc.integer({ min: 1, max: 9 }), // rows; a workgroup packs 128 / lanes rows, with padding
    fc.integer({ min: 33, max: 700 }),
    fc.boolean(),
    fc.integer({ min: 1, max: 1000 }),
  );
  await check(arb, async ([rows, n, leading, seed]) => {
    const shape = leading ? [n, rows] : [rows, n];
    const axis = leading ? 0 : 1;
    const v = seededValues(rows * n, seed, -8, 8);
    const x = mg.tensor(v, { shape });
    for (const op of OPS) {
      const y = op.run(x, axis);
      const tol = op.name === "softmax" ? LONG : LONG_LOG;
      await assertTensorClose(y, op.ref(nd(v, shape), axis), tol, `${op.name} [${shape}]`);
      y.dispose();
    }
    x.dispose();
  }, 10);
});

Deno.test("softmax reads transposed and sliced views without a copy (f32, rtol 1e-5)", async () => {
  await gpu();
  const v = seededValues(5 * 6 * 70, 7, -4, 4);
  const base = mg.tensor(v, { shape: [5, 6, 70] });
  const ref = nd(v, [5, 6, 70]);
  // permute to [70, 5, 6] and take softmax over axis 0 (stride 1 in memory) and axis 2.
  const p = base.permute([2, 0, 1]);
  const refP = permute(ref, [2, 0, 1]);
  for (const axis of [0, 1, 2, -1]) {
    for (const op of OPS) {
      const y = op.run(p, axis);
      const tol = op.name === "softmax" ? LONG : LONG_LOG;
      await assertTensorClose(y, op.ref(refP, axis), tol, `${op.name} permuted axis ${axis}`);
      y.dispose();
    }
  }
  // every other element of the last axis, from index 3
  const s = base.slice(2, 3, undefined, 2);
  const sv = Array.from(await s.data());
  const y = mg.softmax(s, -1);
  await assertTensorClose(y, softmaxRef(nd(sv, s.shape), -1), SHORT, "sliced");
  for (const t of [base, p, s, y]) t.dispose();
});

Deno.test("softmax: many strided rows (one thread per row) and 65999 medium rows (8 per workgroup) (rtol 2e-5)", async () => {
  await gpu();
  // axis 0 of [40, 2100]: 2100 rows of 40 with stride 2100 (thread-per-row path).
  const v = seededValues(40 * 2100, 11, -5, 5);
  const x = mg.tensor(v, { shape: [40, 2100] });
  const y = mg.logSoftmax(x, 0);
  await assertTensorClose(y, logSoftmaxRef(nd(v, [40, 2100]), 0), LONG_LOG, "strided rows");
  // 65999 rows of 33: 16 lanes per row, 8 rows per workgroup, the last workgroup padded.
  const w = seededValues(65999 * 33, 12, -5, 5);
  const z = mg.tensor(w, { shape: [65999, 33] });
  const sz = mg.softmax(z);
  await assertTensorClose(sz, softmaxRef(nd(w, [65999, 33]), -1), LONG, "65999 rows");
  for (const t of [x, y, z, sz]) t.dispose();
});

Deno.test("softmax: logits of ±1e4 and equal logits stay finite and exact", async () => {
  await gpu();
  for (const n of [3, 300]) {
    const v = new Float32Array(2 * n);
    v[0] = 1e4;
    v[1] = -1e4;
    for (let j = 0; j < n; j++) v[n + j] = 2.5; // equal logits
    v[n + n - 1] = 2.5;
    const x = mg.tensor(v, { shape: [2, n] });
    const sm = await mg.softmax(x).data();
    const ls = await mg.logSoftmax(x).data();
    const expSm = new Float64Array(2 * n);
    const expLs = new Float64Array(2 * n);
    expSm[0] = 1;
    expLs[0] = 0;
    for (let j = 1; j < n; j++) expLs[j] = v[j] - 1e4;
    for (let j = 0; j < n; j++) {
      expSm[n + j] = 1 / n;
      expLs[n + j] = -Math.log(n);
    }
    assertClose(sm, expSm, { rtol: 1e-6, atol: 0 }, `softmax ±1e4 n=${n}`);
    assertClose(ls, expLs, { rtol: 1e-6, atol: 1e-6 }, `logSoftmax ±1e4 n=${n}`);
    assertEquals(ls[1], -2e4);
    // the gradient of a saturated softmax is finite (exactly 0 on the saturated row)
    const xg = mg.tensor(v, { shape: [2, n], requiresGrad: true });
    const y = mg.softmax(xg);
    const g = mg.tensor(seededValues(2 * n, 3), { shape: [2, n] });
    y.backward(g);
    const dx = await xg.grad!.data();
    assertEquals(dx.slice(0, n).every((d) => d === 0), true);
    assertEquals(dx.every(Number.isFinite), true);
    for (const t of [x, xg, y, g]) t.dispose();
  }
});

Deno.test("softmax of a scalar is 1 and of size-1 axes is 1; log-softmax is 0; empty stays empty", async () => {
  await gpu();
  const s = mg.tensor(3.5);
  assertEquals(await mg.softmax(s).item(), 1);
  assertEquals(await mg.logSoftmax(s, 0).item(), 0);
  const x = mg.tensor(seededValues(6, 2), { shape: [2, 1, 3] });
  assertEquals(Array.from(await mg.softmax(x, 1).data()), [1, 1, 1, 1, 1, 1]);
  const e = mg.zeros([0, 4]);
  assertEquals(mg.softmax(e, 1).shape, [0, 4]);
  for (const t of [s, x, e]) t.dispose();
});

Deno.test("softmax/logSoftmax in f16 match float64 on f16-rounded inputs (rtol 2e-3)", async () => {
  const info = await gpu();
  if (!info.f16) return;
  for (const [shape, axis] of [[[3, 7], -1], [[4, 130], 1], [[90, 3], 0]] as const) {
    const v = Float32Array.from(new Float16Array(seededValues(size(shape), 5, -4, 4)));
    const x = mg.tensor(v, { shape, dtype: "f16" });
    for (const op of OPS) {
      const y = op.run(x, axis);
      assertEquals(y.dtype, "f16");
      await assertTensorClose(y, op.ref(nd(v, shape), axis), F16, `${op.name} f16 [${shape}]`);
      y.dispose();
    }
    x.dispose();
  }
});

Deno.test("softmax/logSoftmax backward match the reference vjp on random shapes and axes (atol 2e-6)", async () => {
  await gpu();
  await check(arbCase(3, 7), async ([shape, axis, v, gv]) => {
    for (const op of OPS) {
      const x = mg.tensor(new Float32Array(v), { shape, requiresGrad: true });
      const g = mg.tensor(new Float32Array(gv), { shape });
      const y = op.run(x, axis);
      y.backward(g);
      await assertTensorClose(
        x.grad!,
        op.vjp(nd(v, shape), axis, nd(gv, shape)),
        GRAD,
        `${op.name} grad [${shape}] ${axis}`,
      );
      for (const t of [x, g, y]) t.dispose();
    }
  }, 15);
});

Deno.test("softmax/logSoftmax backward on long rows and a strided upstream gradient (rtol 2e-5)", async () => {
  await gpu();
  const shape = [3, 257];
  const v = seededValues(3 * 257, 21, -5, 5);
  const gv = seededValues(3 * 257, 22, -2, 2);
  for (const op of OPS) {
    for (const axis of [1, 0]) {
      const x = mg.tensor(v, { shape, requiresGrad: true });
      const gT = mg.tensor(gv, { shape: [257, 3] }); // transposed below: a strided g
      const g = gT.transpose();
      const y = op.run(x, axis);
      y.backward(g);
      const gRef = permute(nd(gv, [257, 3]), [1, 0]);
      await assertTensorClose(
        x.grad!,
        op.vjp(nd(v, shape), axis, gRef),
        GRAD_LONG,
        `${op.name} long grad axis ${axis}`,
      );
      for (const t of [x, gT, g, y]) t.dispose();
    }
  }
});

Deno.test("reference softmax/logSoftmax vjps match central differences (float64, rtol 1e-6)", () => {
  fc.assert(
    fc.property(arbCase(3, 5), ([shape, axis, v, gv]) => {
      const g = nd(gv, shape);
      for (const op of OPS) {
        const num = numericGrad((x: NDArray) => dot(op.ref(x, axis), g), nd(v, shape));
        assertClose(op.vjp(nd(v, shape), axis, g).data, num, NUMERIC, `${op.name} numeric`);
      }
    }),
    { numRuns: 30 },
  );
});

Deno.test("softmax: outputs disposed before backward still work; memory stays flat", async () => {
  await gpu();
  const x = mg.tensor(seededValues(4 * 100, 9), { shape: [4, 100], requiresGrad: true });
  const run = () => {
    const s = mg.softmax(x, 0);
    const y = mg.logSoftmax(s, 1);
    const l = y.sum();
    // outputs disposed before backward: the vjps read their retained saved handles
    s.dispose();
    y.dispose();
    l.backward();
    l.dispose();
    x.zeroGrad();
  };
  run();
  await mg.sync();
  const before = mg.memory();
  run();
  await mg.sync();
  const after = mg.memory();
  assertEquals(after.inUseBytes, before.inUseBytes);
  assertEquals(after.liveTensors, before.liveTensors);
  x.dispose();
});

Deno.test("softmax/logSoftmax reject integer dtypes and out-of-range axes with MoongradError", async () => {
  await gpu();
  const i = mg.tensor([1, 2, 3], { dtype: "i32" });
  const x = mg.zeros([2, 3]);
  for (const f of [mg.softmax, mg.logSoftmax]) {
    assertThrows(() => f(i), mg.MoongradError, "dtype i32");
    assertThrows(() => f(x, 2), mg.MoongradError, "axis 2 is out of range");
    assertThrows(() => f(x, -3), mg.MoongradError, "axis -3");
    assertThrows(() => f(x, 0.5), mg.MoongradError, "axis 0.5");
  }
  assertThrows(() => mg.softmax(i), mg.MoongradError, "moongrad.softmax");
  assertThrows(() => mg.logSoftmax(i), mg.MoongradError, "moongrad.logSoftmax");
  i.dispose();
  x.dispose();
});
