/**
 * Who reduces a row (ops/reduce.ts `rowThreads`): one workgroup (a tree over its lanes) or one
 * thread (in order; CPU adapters' default from 64 rows of at most 8192), each forced on the
 * adapter at hand so both run on every adapter. Rows hold NaN, ±Inf and finite values on a
 * 1/64 grid; shapes fill no whole workgroup (65 rows), are long (700) or just past the short
 * bound (17), and reduce a middle axis (a transposing copy, then rows) or leading axes (read
 * in place, a thread per column, in the "thread" layout). Against the float64
 * references, whose special values are PyTorch's; tolerances as in nan_reduce_test.ts. Then the
 * layout CPU adapters pick, by kernel name.
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { assertClose, countDispatches, f32, gpu, seededValues } from "./util.ts";
import { nd } from "./reference/ndarray.ts";
import { argRef, maxRef, meanRef, minRef, sumRef, varRef } from "./reference/reduce.ts";
import { type ReduceLayout, setReduceLayout } from "../ops/reduce.ts";

const LAYOUTS: ReduceLayout[] = ["workgroup", "thread"];
const EXACT = { rtol: 0, atol: 0 };
/** Sums of ≤ 700 values of magnitude ≤ 3 on a 1/64 grid: f32 rounding ≤ ~1e-3 absolute. */
const SUM = { rtol: 1e-5, atol: 2e-3 };
const MEAN = { rtol: 1e-4, atol: 1e-5 };

/** Values on a 1/64 grid in [−3, 3] with NaN, +Inf and −Inf sprinkled over some rows. */
function gridValues(count: number, seed: number): number[] {
  const v = Array.from(seededValues(count, seed, -3, 3), (e) => Math.round(e * 64) / 64);
  for (let i = 7; i < count; i += 331) v[i] = [NaN, Infinity, -Infinity][i % 3];
  return v;
}

Deno.test("reductions with NaN and ±Inf: both row layouts match PyTorch (float64 ref)", async () => {
  await gpu();
  const cases: [number[], number | number[]][] = [
    // [shape, axis or axes]
    [[65, 40], 1],
    [[70, 700], 1],
    [[64, 17], -1],
    [[40, 66], 0],
    [[2, 20, 64], 1], // a middle axis: copied, then rows
    [[2, 20, 64], [0, 1]], // two leading axes: 64 columns of 40
    [[3, 64, 20], 2],
  ];
  for (const layout of LAYOUTS) {
    const previous = setReduceLayout(layout);
    try {
      for (const [shape, axis] of cases) {
        const count = shape.reduce((a, b) => a * b, 1);
        const v = gridValues(count, count);
        const x = f32(v, shape);
        const r = nd(v, shape);
        const ax = [axis].flat().map((a) => (a < 0 ? a + shape.length : a));
        const what = `${layout} [${shape}] axes ${axis}`;
        const checks: [mg.Tensor, ArrayLike<number>, { rtol: number; atol: number }, string][] = [
          [x.sum(axis), sumRef(r, ax, false).data, SUM, "sum"],
          [x.mean(axis), meanRef(r, ax, false).data, MEAN, "mean"],
          [x.var(axis, { correction: 0 }), varRef(r, ax, false, 0).data, MEAN, "var"],
          [x.max(axis), maxRef(r, ax, false).data, EXACT, "max"],
          [x.min(axis), minRef(r, ax, false).data, EXACT, "min"],
        ];
        if (typeof axis === "number") {
          checks.push([x.argmax(axis), argRef(r, ax, false, "max").data, EXACT, "argmax"]);
          checks.push([mg.argmin(x, axis), argRef(r, ax, false, "min").data, EXACT, "argmin"]);
        }
        for (const [t, want, tol, name] of checks) {
          assertClose(await t.data(), want, tol, `${name} ${what}`);
          t.dispose();
        }
        x.dispose();
      }
    } finally {
      setReduceLayout(previous);
    }
  }
});

Deno.test("i32 reductions over rows and leading axes: both layouts give exact results", async () => {
  await gpu();
  const [rows, n] = [70, 64];
  const v = Array.from({ length: rows * n }, (_, i) => ((i * 7919) % 201) - 100);
  const at = (r: number, c: number) => v[r * n + c];
  const rowSum = Array.from({ length: rows }, (_, r) => v.slice(r * n, (r + 1) * n))
    .map((row) => row.reduce((a, b) => a + b, 0));
  const colSum = Array.from({ length: n }, (_, c) => {
    let t = 0;
    for (let r = 0; r < rows; r++) t += at(r, c);
    return t;
  });
  const colMax = Array.from({ length: n }, (_, c) => {
    let best = 0;
    for (let r = 1; r < rows; r++) if (at(r, c) > at(best, c)) best = r;
    return [at(best, c), best];
  });
  for (const layout of LAYOUTS) {
    const previous = setReduceLayout(layout);
    try {
      const x = mg.tensor(Int32Array.from(v), { shape: [rows, n] });
      const checks: [mg.Tensor, number[], string][] = [
        [x.sum(1), rowSum, "row sums"],
        [x.sum(0), colSum, "column sums"],
        [x.max(0), colMax.map((m) => m[0]), "column max"],
        [x.argmax(0), colMax.map((m) => m[1]), "column argmax"],
      ];
      for (const [t, want, what] of checks) {
        assert.equal(t.dtype, "i32", what);
        assert.deepEqual(Array.from(await t.data()), want, `${layout} ${what}`);
        t.dispose();
      }
      x.dispose();
    } finally {
      setReduceLayout(previous);
    }
  }
});

Deno.test("reductions: CPU adapters give each row one thread from 64 rows of at most 8192", async () => {
  const info = await gpu();
  const cases: [number, number, boolean][] = [
    // [rows, n, one thread per row]
    [63, 40, false],
    [64, 40, info.isFallbackAdapter],
    [64, 8192, info.isFallbackAdapter],
    [64, 8193, false],
    [5, 16, true], // short rows, every adapter
  ];
  for (const [rows, n, thread] of cases) {
    const x = mg.tensor(seededValues(rows * n, 3, -1, 1), { shape: [rows, n] });
    const counts = countDispatches(() => x.max(1).dispose());
    assert.deepEqual([...counts.keys()], [thread ? "max_thread" : "max_rows"], `${rows} × ${n}`);
    x.dispose();
  }
  await mg.sync();
});

Deno.test("reductions over leading axes: CPU adapters read 64 or more columns in place", async () => {
  const info = await gpu();
  for (const columns of [63, 64]) {
    const x = mg.tensor(seededValues(100 * columns, 4, -1, 1), { shape: [100, columns] });
    const counts = countDispatches(() => x.sum(0).dispose());
    const inPlace = info.isFallbackAdapter && columns >= 64;
    assert.equal(counts.has("sum_columns"), inPlace, `${columns} columns: ${[...counts.keys()]}`);
    if (inPlace) assert.equal(counts.size, 1, `only the column kernel: ${[...counts.keys()]}`);
    x.dispose();
  }
  await mg.sync();
});
