import * as mg from "../mod.ts";
import {
  arbShape,
  arbValues,
  assertClose,
  assertTensorClose,
  check,
  expectMgError,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import { dot, nd, NDArray, numericGrad, permute } from "./reference/ndarray.ts";
import {
  crossEntropyRef,
  crossEntropyVjp,
  mseRef,
  mseVjp,
  type Reduction,
} from "./reference/loss.ts";

// Tolerances. A row's loss is lse − x[t]: lse = max + log Σ exp(·) carries a few ulps of the
// larger of |max| and log C (≤ ~15 here), so 1e-5 relative + 1e-5 absolute; "mean"/"sum"
// add up to ~100 such rows in f32 (1e-5 relative covers the summation). Gradients are
// softmax − onehot times g (|g| ≤ 2): 1e-5 relative + 1e-6 absolute. f16 logits: the loss is
// stored in f16 (2^-11 relative): 2e-3. Reference vjp vs central differences (float64,
// h = 1e-6): 1e-6.
const LOSS = { rtol: 1e-5, atol: 1e-5 };
const GRAD = { rtol: 1e-5, atol: 1e-6 };
const F16 = { rtol: 2e-3, atol: 2e-3 };
const NUMERIC = { rtol: 1e-6, atol: 1e-8 };
const REDUCTIONS: Reduction[] = ["mean", "sum", "none"];

/** Deep equality through JSON (enough for numbers, arrays and strings). */
function assertEquals(actual: unknown, expected: unknown, what = ""): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: got ${a}, expected ${e}`);
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/**
 * Outer shape (rank 0..2), class count (short, or long > 64), logits, targets with some rows
 * ignored, the ignore value, and upstream-gradient values (one per row).
 */
const arbCe = fc.tuple(
  arbShape(2, 6),
  fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 65, max: 300 })),
  fc.constantFrom(-100, 1, 7),
).chain(([outer, c, ignore]) =>
  fc.tuple(
    fc.constant(outer),
    fc.constant(c),
    fc.constant(ignore),
    arbValues(size(outer) * c, -8, 8),
    fc.array(
      fc.oneof(fc.integer({ min: 0, max: c - 1 }), fc.constant(ignore)),
      { minLength: size(outer), maxLength: size(outer) },
    ),
    arbValues(size(outer), -2, 2),
  )
);

Deno.test("crossEntropy matches float64 for all reductions, random shapes, ignoreIndex (rtol 1e-5)", async () => {
  await gpu();
  await check(arbCe, async ([outer, c, ignore, v, tg]) => {
    const shape = [...outer, c];
    const x = mg.tensor(new Float32Array(v), { shape });
    const t = mg.tensor(Int32Array.from(tg), { shape: outer });
    for (const reduction of REDUCTIONS) {
      const l = mg.crossEntropy(x, t, { ignoreIndex: ignore, reduction });
      const ref = crossEntropyRef(nd(v, shape), tg, { ignoreIndex: ignore, reduction });
      await assertTensorClose(l, ref, LOSS, `ce ${reduction} [${shape}] ignore ${ignore}`);
      l.dispose();
    }
    x.dispose();
    t.dispose();
  }, 20);
});

Deno.test("crossEntropy backward matches the reference vjp for all reductions (rtol 1e-5)", async () => {
  await gpu();
  await check(arbCe, async ([outer, c, ignore, v, tg, gv]) => {
    const shape = [...outer, c];
    const t = mg.tensor(Int32Array.from(tg), { shape: outer });
    for (const reduction of REDUCTIONS) {
      const x = mg.tensor(new Float32Array(v), { shape, requiresGrad: true });
      const l = mg.crossEntropy(x, t, { ignoreIndex: ignore, reduction });
      const gRef = reduction === "none" ? nd(gv, outer) : nd([gv[0] ?? 1], []);
      const g = mg.tensor(Float32Array.from(gRef.data), { shape: gRef.shape });
      l.backward(g);
      const opts = { ignoreIndex: ignore, reduction };
      await assertTensorClose(
        x.grad!,
        crossEntropyVjp(nd(v, shape), tg, opts, gRef),
        GRAD,
        `ce grad ${reduction} [${shape}]`,
      );
      for (const a of [x, l, g]) a.dispose();
    }
    t.dispose();
  }, 15);
});

Deno.test("reference crossEntropy vjp matches central differences (float64, rtol 1e-6)", () => {
  fc.assert(
    fc.property(
      fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 6 })).chain(([r, c]) =>
        fc.tuple(
          fc.constant(r),
          fc.constant(c),
          arbValues(r * c, -5, 5),
          fc.array(fc.oneof(fc.integer({ min: 0, max: c - 1 }), fc.constant(-100)), {
            minLength: r,
            maxLength: r,
          }),
          arbValues(r, -2, 2),
          fc.constantFrom(...REDUCTIONS),
        )
      ),
      ([r, c, v, tg0, gv, reduction]) => {
        const tg: number[] = [...tg0];
        if (reduction === "mean" && !tg.some((t) => t !== -100)) tg[0] = 0;
        const g = reduction === "none" ? nd(gv, [r]) : nd([gv[0]], []);
        const f = (x: NDArray) => dot(crossEntropyRef(x, tg, { reduction }), g);
        const num = numericGrad(f, nd(v, [r, c]));
        const vjp = crossEntropyVjp(nd(v, [r, c]), tg, { reduction }, g);
        assertClose(vjp.data, num, NUMERIC, `ce numeric ${reduction}`);
      },
    ),
    { numRuns: 40 },
  );
});

Deno.test("crossEntropy on 3-D logits and a transposed (strided) logits view (rtol 1e-5)", async () => {
  await gpu();
  const [b, tt, c] = [2, 5, 70];
  const v = seededValues(b * tt * c, 31, -6, 6);
  const tg = Array.from({ length: b * tt }, (_, i) => (i * 37) % c);
  tg[3] = -100;
  const x = mg.tensor(v, { shape: [b, tt, c], requiresGrad: true });
  const t = mg.tensor(Int32Array.from(tg), { shape: [b, tt] });
  const l = mg.crossEntropy(x, t);
  await assertTensorClose(l, crossEntropyRef(nd(v, [b, tt, c]), tg), LOSS, "3-D mean");
  l.backward();
  const g1 = nd([1], []);
  await assertTensorClose(
    x.grad!,
    crossEntropyVjp(nd(v, [b, tt, c]), tg, {}, g1),
    GRAD,
    "3-D grad",
  );
  // logits stored as [C, B*T] and viewed transposed: the class axis has stride B*T.
  const vt = permute(nd(v, [b * tt, c]), [1, 0]);
  const stored = mg.tensor(Float32Array.from(vt.data), { shape: [c, b * tt], requiresGrad: true });
  const view = stored.transpose();
  const t2 = t.reshape([b * tt]);
  const l2 = mg.crossEntropy(view, t2, { reduction: "sum" });
  const ref2 = crossEntropyRef(nd(v, [b * tt, c]), tg, { reduction: "sum" });
  await assertTensorClose(l2, ref2, LOSS, "strided sum");
  l2.backward();
  const vjp2 = crossEntropyVjp(nd(v, [b * tt, c]), tg, { reduction: "sum" }, g1);
  await assertTensorClose(stored.grad!, permute(vjp2, [1, 0]), GRAD, "strided grad");
  for (const a of [x, t, l, stored, view, t2, l2]) a.dispose();
});

Deno.test("crossEntropy: logits of ±1e4 and equal logits give exact finite losses and gradients", async () => {
  await gpu();
  for (const c of [3, 200]) {
    const v = new Float32Array(3 * c);
    v[0] = 1e4;
    v[1] = -1e4; // row 0: target 0 → loss 0; row 1: target 1 (the −1e4) → loss 2e4
    v[c] = -1e4;
    v[c + 1] = 1e4;
    for (let j = 0; j < c; j++) v[2 * c + j] = 1e4; // row 2: equal logits → log C
    const x = mg.tensor(v, { shape: [3, c], requiresGrad: true });
    const t = mg.tensor([0, 0, 2], { dtype: "i32" });
    const l = mg.crossEntropy(x, t, { reduction: "none" });
    const got = await l.data();
    assertClose(got, [0, 2e4, Math.log(c)], { rtol: 1e-6, atol: 1e-3 }, `±1e4 losses C=${c}`);
    const s = l.sum();
    s.backward();
    const dx = await x.grad!.data();
    if (!dx.every(Number.isFinite)) throw new Error("non-finite gradient");
    const ref = crossEntropyVjp(
      nd(v, [3, c]),
      [0, 0, 2],
      { reduction: "none" },
      nd([1, 1, 1], [3]),
    );
    assertClose(dx, ref, GRAD, `±1e4 grad C=${c}`);
    for (const a of [x, t, l, s]) a.dispose();
  }
});

Deno.test("crossEntropy: all rows ignored → mean NaN (PyTorch), sum 0, none zeros, zero gradient", async () => {
  await gpu();
  const x = mg.tensor(seededValues(12, 4), { shape: [3, 4], requiresGrad: true });
  const t = mg.tensor([5, 5, 5], { dtype: "i32" });
  const mean = mg.crossEntropy(x, t, { ignoreIndex: 5 });
  if (!Number.isNaN(await mean.item())) throw new Error("mean of all-ignored rows must be NaN");
  mean.backward();
  assertEquals(Array.from(await x.grad!.data()), new Array(12).fill(0), "all-ignored grad");
  const sum = mg.crossEntropy(x, t, { ignoreIndex: 5, reduction: "sum" });
  assertEquals(await sum.item(), 0);
  const none = mg.crossEntropy(x, t, { ignoreIndex: 5, reduction: "none" });
  assertEquals(Array.from(await none.data()), [0, 0, 0]);
  // no rows at all: mean NaN, sum 0
  const e = mg.zeros([0, 4]);
  const te = mg.zeros([0], { dtype: "i32" });
  const emean = mg.crossEntropy(e, te);
  const esum = mg.crossEntropy(e, te, { reduction: "sum" });
  if (!Number.isNaN(await emean.item())) throw new Error("empty mean not NaN");
  assertEquals(await esum.item(), 0);
  for (const a of [x, t, mean, sum, none, e, te, emean, esum]) a.dispose();
});

Deno.test("crossEntropy: a target outside [0, C) is an error at the next readback; unchecked, that row's loss and gradient are NaN", async () => {
  await gpu();
  const v = seededValues(12, 8, -2, 2);
  const tg = [1, 4, -1];
  const x = mg.tensor(v, { shape: [3, 4], requiresGrad: true });
  const t = mg.tensor(Int32Array.from(tg), { shape: [3] });
  const checked = mg.crossEntropy(x, t, { reduction: "none" });
  let message = "(nothing thrown)";
  try {
    await checked.data();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw e;
    message = e.message;
  }
  const want = "moongrad.crossEntropy: targets holds 2 values outside the allowed range " +
    "[0, 4) or -100 (ignored): the first at flat position 1 of targets [3], the smallest -1, " +
    "the largest 4";
  if (!message.startsWith(want)) throw new Error(`expected "${want}…", got "${message}"`);
  checked.dispose();
  const ignored = mg.tensor(Int32Array.from([1, -100, 3]), { shape: [3] });
  const ok = mg.crossEntropy(x, ignored); // the ignore index stays valid
  if (!Number.isFinite(await ok.item())) throw new Error("ignored rows must not fail the check");
  for (const a of [ignored, ok]) a.dispose();
  const was = mg.setCheckIndices(false);
  try {
    await uncheckedNaNRows(v, x, t);
  } finally {
    mg.setCheckIndices(was);
  }
});

async function uncheckedNaNRows(v: Float32Array, x: mg.Tensor, t: mg.Tensor): Promise<void> {
  const none = mg.crossEntropy(x, t, { reduction: "none" });
  const got = await none.data();
  assertClose([got[0]], [crossEntropyRef(nd(v, [3, 4]), [1], { reduction: "none" }).data[0]], LOSS);
  if (!Number.isNaN(got[1]) || !Number.isNaN(got[2])) throw new Error(`rows 1, 2: ${got}`);
  const total = none.sum();
  total.backward();
  total.dispose();
  const dx = await x.grad!.data();
  if (!dx.slice(0, 4).every(Number.isFinite)) throw new Error("row 0 grad must stay finite");
  if (!dx.slice(4).every(Number.isNaN)) throw new Error("bad rows' grads must be NaN");
  const mean = mg.crossEntropy(x, t);
  if (!Number.isNaN(await mean.item())) throw new Error("mean with a bad target must be NaN");
  for (const a of [x, t, none, mean]) a.dispose();
}

Deno.test("crossEntropy with f16 logits matches float64 on f16-rounded inputs (rtol 2e-3)", async () => {
  const info = await gpu();
  if (!info.f16) return;
  const v = Float32Array.from(new Float16Array(seededValues(4 * 90, 13, -5, 5)));
  const tg = [3, 89, -100, 0];
  const x = mg.tensor(v, { shape: [4, 90], dtype: "f16", requiresGrad: true });
  const t = mg.tensor(Int32Array.from(tg), { shape: [4] });
  for (const reduction of REDUCTIONS) {
    const l = mg.crossEntropy(x, t, { reduction });
    assertEquals(l.dtype, "f16");
    await assertTensorClose(l, crossEntropyRef(nd(v, [4, 90]), tg, { reduction }), F16, reduction);
    l.dispose();
  }
  const l = mg.crossEntropy(x, t);
  l.backward();
  assertEquals(x.grad!.dtype, "f16");
  const ref = crossEntropyVjp(nd(v, [4, 90]), tg, {}, nd([1], []));
  await assertTensorClose(x.grad!, ref, { rtol: 2e-3, atol: 1e-5 }, "f16 grad");
  for (const a of [x, t, l]) a.dispose();
});

Deno.test("crossEntropy: forward + backward leave GPU memory flat", async () => {
  await gpu();
  const x = mg.tensor(seededValues(6 * 80, 3), { shape: [6, 80], requiresGrad: true });
  const t = mg.tensor([1, 2, 3, -100, 5, 79], { dtype: "i32" });
  const run = (reduction: Reduction) => {
    const l = mg.crossEntropy(x, t, { reduction });
    const s = reduction === "none" ? l.sum() : l;
    s.backward();
    if (s !== l) s.dispose();
    l.dispose();
    x.zeroGrad();
  };
  for (const r of REDUCTIONS) run(r);
  await mg.sync();
  const before = mg.memory();
  for (const r of REDUCTIONS) run(r);
  // a per-row result disposed before backward still backpropagates (saved handles keep it)
  const rows = mg.crossEntropy(x, t, { reduction: "none" });
  const total = rows.sum();
  rows.dispose();
  total.backward();
  total.dispose();
  x.zeroGrad();
  await mg.sync();
  const after = mg.memory();
  assertEquals(after.inUseBytes, before.inUseBytes, "inUseBytes");
  assertEquals(after.liveTensors, before.liveTensors, "liveTensors");
  x.dispose();
  t.dispose();
});

Deno.test("crossEntropy rejects bad dtypes, shapes, reductions and ignoreIndex with MoongradError", async () => {
  await gpu();
  const x = mg.zeros([2, 3]);
  const t = mg.tensor([0, 1], { dtype: "i32" });
  const ce = "moongrad.crossEntropy";
  expectMgError(() => mg.crossEntropy(mg.zeros([2, 3], { dtype: "i32" }), t), ce, "logits", "i32");
  expectMgError(() => mg.crossEntropy(x, mg.zeros([2])), ce, "targets", "f32");
  expectMgError(
    () => mg.crossEntropy(x, mg.tensor([0, 1, 2], { dtype: "i32" })),
    ce,
    "[3]",
    "[2]",
  );
  expectMgError(() => mg.crossEntropy(x, t, { reduction: "avg" as "mean" }), ce, "avg");
  expectMgError(() => mg.crossEntropy(x, t, { ignoreIndex: 1.5 }), ce, "ignoreIndex");
  expectMgError(() => mg.crossEntropy(mg.zeros([2, 0]), t), ce, "[2, 0]");
  expectMgError(() => mg.crossEntropy(mg.tensor(1), mg.tensor(0, { dtype: "i32" })), ce, "[]");
  x.dispose();
  t.dispose();
});

Deno.test("mseLoss matches float64 for all reductions and backpropagates to both inputs (rtol 1e-5)", async () => {
  await gpu();
  await check(
    arbShape(3, 7).chain((s) =>
      fc.tuple(fc.constant(s), arbValues(size(s)), arbValues(size(s)), arbValues(size(s), -2, 2))
    ),
    async ([shape, pv, tv, gv]) => {
      for (const reduction of REDUCTIONS) {
        const p = mg.tensor(new Float32Array(pv), { shape, requiresGrad: true });
        const t = mg.tensor(new Float32Array(tv), { shape, requiresGrad: true });
        const l = mg.mseLoss(p, t, { reduction });
        const ref = mseRef(nd(pv, shape), nd(tv, shape), reduction);
        await assertTensorClose(l, ref, LOSS, `mse ${reduction} [${shape}]`);
        const gRef = reduction === "none" ? nd(gv, shape) : nd([gv[0] ?? 1], []);
        const g = mg.tensor(Float32Array.from(gRef.data), { shape: gRef.shape });
        l.backward(g);
        const vjp = mseVjp(nd(pv, shape), nd(tv, shape), reduction, gRef);
        await assertTensorClose(p.grad!, vjp, GRAD, `mse dpred ${reduction}`);
        const neg = new NDArray(vjp.data.map((d) => -d), vjp.shape);
        await assertTensorClose(t.grad!, neg, GRAD, `mse dtarget ${reduction}`);
        for (const a of [p, t, l, g]) a.dispose();
      }
    },
    10,
  );
});

Deno.test("reference mse vjp matches central differences (float64, rtol 1e-6)", () => {
  for (const reduction of REDUCTIONS) {
    const pv = Array.from(seededValues(6, 1));
    const tv = Array.from(seededValues(6, 2));
    const g = reduction === "none" ? nd(seededValues(6, 3), [2, 3]) : nd([0.7], []);
    const f = (x: NDArray) => dot(mseRef(x, nd(tv, [2, 3]), reduction), g);
    const num = numericGrad(f, nd(pv, [2, 3]));
    assertClose(mseVjp(nd(pv, [2, 3]), nd(tv, [2, 3]), reduction, g).data, num, NUMERIC, reduction);
  }
});

Deno.test("mseLoss rejects mismatched shapes, dtypes and reductions with MoongradError", async () => {
  await gpu();
  const a = mg.zeros([2, 3]);
  const b = mg.zeros([3, 2]);
  const i = mg.zeros([2, 3], { dtype: "i32" });
  expectMgError(() => mg.mseLoss(a, b), "moongrad.mseLoss", "[2, 3]", "[3, 2]");
  expectMgError(() => mg.mseLoss(a, i), "moongrad.mseLoss", "i32");
  expectMgError(() => mg.mseLoss(a, a, { reduction: "max" as "sum" }), "moongrad.mseLoss", "max");
  for (const t of [a, b, i]) t.dispose();
});
