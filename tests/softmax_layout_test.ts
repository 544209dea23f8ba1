/**
 * The row layouts of the softmax and cross-entropy kernels (ops/softmax.ts `rowLanes`):
 * "lanes" (a power-of-two group of threads per row, reducing in workgroup memory) and "thread"
 * (one thread per row, CPU adapters' default from 64 rows of at most 8192; softmax reads rows
 * of a multiple of 4 as vec4 then), each forced on the adapter at hand so both run on every
 * adapter. Shapes cover workgroups the rows do not fill (65 rows: one past two 32-thread
 * groups; 16 lanes per row pack 8 rows per 128-thread group), long rows (128 lanes), rows of a
 * multiple of 4 and not, one-element rows, a leading (strided) axis, rows holding NaN, +Inf or
 * only −Inf (vec4 rows), and cross-entropy with ignored rows. Forward against float64, backward against the reference
 * vjp; tolerances as in softmax_test.ts and loss_test.ts (a thread sums its row in order, the
 * lanes in a tree: the same bounds hold for both).
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { assertTensorClose, countDispatches, gpu, seededValues } from "./util.ts";
import { nd } from "./reference/ndarray.ts";
import { logSoftmaxRef, logSoftmaxVjp, softmaxRef, softmaxVjp } from "./reference/softmax.ts";
import { crossEntropyRef, crossEntropyVjp } from "./reference/loss.ts";
import { type RowLayout, setRowLayout } from "../ops/softmax.ts";

const LAYOUTS: RowLayout[] = ["lanes", "thread"];
const LONG = { rtol: 2e-5, atol: 1e-8 };
const LONG_LOG = { rtol: 2e-5, atol: 4e-6 };
const GRAD_LONG = { rtol: 2e-5, atol: 4e-6 };
const LOSS = { rtol: 1e-5, atol: 1e-5 };
const GRAD = { rtol: 1e-5, atol: 1e-6 };
const F16 = { rtol: 2e-3, atol: 2e-3 };

/** Runs `fn` with the row layout forced to `layout`. */
async function withLayout(layout: RowLayout, fn: () => Promise<void>) {
  const previous = setRowLayout(layout);
  try {
    await fn();
  } finally {
    setRowLayout(previous);
  }
}

const OPS = [
  { name: "softmax", run: mg.softmax, ref: softmaxRef, vjp: softmaxVjp, tol: LONG },
  { name: "logSoftmax", run: mg.logSoftmax, ref: logSoftmaxRef, vjp: logSoftmaxVjp, tol: LONG_LOG },
] as const;

Deno.test("softmax/logSoftmax forward and backward: both row layouts match float64", async () => {
  await gpu();
  const cases: [string, number[], number][] = [
    // [what, shape, axis]
    ["65 rows of 40 (16 lanes; thread groups of 32 plus one)", [65, 40], 1],
    ["70 long rows of 700 (128 lanes)", [70, 700], -1],
    ["64 one-element rows", [64, 1], 1],
    ["a leading axis: 96 rows of 50, stride 96", [50, 96], 0],
    ["3-D, 2 × 40 rows of 33", [2, 40, 33], 2],
  ];
  for (const layout of LAYOUTS) {
    await withLayout(layout, async () => {
      for (const [what, shape, axis] of cases) {
        const count = shape.reduce((a, b) => a * b, 1);
        const v = seededValues(count, count + axis, -8, 8);
        const gv = seededValues(count, 3, -3, 3);
        for (const op of OPS) {
          const x = mg.tensor(v, { shape, requiresGrad: true });
          const y = op.run(x, axis);
          const label = `${layout} ${op.name} ${what}`;
          await assertTensorClose(y, op.ref(nd(v, shape), axis), op.tol, label);
          const g = mg.tensor(gv, { shape });
          y.backward(g);
          const ref = op.vjp(nd(v, shape), axis, nd(gv, shape));
          await assertTensorClose(x.grad!, ref, GRAD_LONG, `${label} dx`);
          for (const t of [x, y, g]) t.dispose();
        }
      }
    });
  }
});

Deno.test("softmax/logSoftmax in f16: both row layouts match float64 on f16-rounded inputs", async () => {
  const info = await gpu();
  if (!info.f16) return;
  const shape = [66, 40];
  const v = Float32Array.from(new Float16Array(seededValues(66 * 40, 5, -4, 4)));
  for (const layout of LAYOUTS) {
    await withLayout(layout, async () => {
      const x = mg.tensor(v, { shape, dtype: "f16" });
      for (const op of OPS) {
        const y = op.run(x, -1);
        assert.equal(y.dtype, "f16");
        await assertTensorClose(y, op.ref(nd(v, shape), -1), F16, `${layout} ${op.name} f16`);
        y.dispose();
      }
      x.dispose();
    });
  }
});

Deno.test("softmax: rows with NaN, +Inf or only −Inf are NaN in both row layouts", async () => {
  await gpu();
  const rows = 66;
  const n = 40;
  const v = seededValues(rows * n, 9, -4, 4);
  v[3 * n + 7] = NaN;
  v[10 * n + 39] = Infinity;
  for (let j = 0; j < n; j++) v[65 * n + j] = -Infinity;
  for (const layout of LAYOUTS) {
    await withLayout(layout, async () => {
      const x = mg.tensor(v, { shape: [rows, n] });
      const y = await mg.softmax(x).data();
      const ref = softmaxRef(
        nd(
          Array.from(v, (e, i) => {
            const r = Math.floor(i / n);
            return r === 3 || r === 10 || r === 65 ? 0 : e;
          }),
          [rows, n],
        ),
        -1,
      ).data;
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < n; j++) {
          const got = y[r * n + j];
          if (r === 3 || r === 10 || r === 65) {
            assert.ok(Number.isNaN(got), `${layout} row ${r} [${j}] = ${got}, expected NaN`);
          } else {
            const want = ref[r * n + j];
            assert.ok(
              Math.abs(got - want) <= 2e-5 * Math.abs(want) + 1e-8,
              `${layout} row ${r} [${j}] = ${got}, expected ${want}`,
            );
          }
        }
      }
      x.dispose();
    });
  }
});

Deno.test("crossEntropy forward and backward: both row layouts match float64", async () => {
  await gpu();
  const cases: [number, number][] = [[65, 40], [70, 300], [100, 3]];
  for (const layout of LAYOUTS) {
    await withLayout(layout, async () => {
      for (const [rows, c] of cases) {
        const v = seededValues(rows * c, rows + c, -8, 8);
        const tg = Array.from({ length: rows }, (_, i) => (i % 7 === 3 ? -100 : (i * 5) % c));
        const t = mg.tensor(Int32Array.from(tg), { shape: [rows] });
        const x = mg.tensor(v, { shape: [rows, c], requiresGrad: true });
        const opts = { ignoreIndex: -100, reduction: "mean" as const };
        const l = mg.crossEntropy(x, t, opts);
        const label = `${layout} crossEntropy [${rows}, ${c}]`;
        await assertTensorClose(l, crossEntropyRef(nd(v, [rows, c]), tg, opts), LOSS, label);
        l.backward();
        const ref = crossEntropyVjp(nd(v, [rows, c]), tg, opts, nd([1], []));
        await assertTensorClose(x.grad!, ref, GRAD, `${label} dx`);
        for (const a of [x, t, l]) a.dispose();
      }
    });
  }
});

Deno.test("softmax: CPU adapters take one thread per row from 64 rows of at most 8192", async () => {
  const info = await gpu();
  // 40-element rows take 16 lanes in the "lanes" layout, rows of more than 512 take 128; one
  // thread reads a row of a multiple of 4 as vec4.
  const cases: [number, number, string][] = [
    [63, 40, "softmax_l16"],
    [64, 40, info.isFallbackAdapter ? "softmax_l1_vec4" : "softmax_l16"],
    [64, 42, info.isFallbackAdapter ? "softmax_l1" : "softmax_l16"],
    [64, 8192, info.isFallbackAdapter ? "softmax_l1_vec4" : "softmax_l128"],
    [64, 8193, "softmax_l128"],
  ];
  for (const [rows, n, name] of cases) {
    const x = mg.tensor(seededValues(rows * n, 5, -1, 1), { shape: [rows, n] });
    const counts = countDispatches(() => mg.softmax(x).dispose());
    assert.deepEqual([...counts.keys()], [name], `${rows} rows of ${n}`);
    x.dispose();
  }
  await mg.sync();
});
