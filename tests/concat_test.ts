/**
 * concat / stack / split vs float64 references. Forward results and gradients are copies of
 * f32 inputs, so they must match exactly (tolerance 0); only the reference-vs-finite-
 * difference checks use a tolerance (1e-6, central differences in float64 on a linear map).
 */
import * as mg from "../mod.ts";
import { assertClose, assertMemoryFlat, assertTensorClose, check, fc, gpu } from "./util.ts";
import { dot, nd, NDArray, numericGrad } from "./reference/ndarray.ts";
import {
  concatRef,
  concatVjp,
  splitRef,
  splitSizes,
  splitVjp,
  stackRef,
} from "./reference/concat.ts";

const EXACT = { rtol: 0, atol: 0 };
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** A base shape (rank 1..4), an axis, and the inputs' lengths on that axis (0 allowed). */
const arbConcatCase = fc.tuple(
  fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }),
  fc.nat(),
  fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 4 }),
  fc.boolean(),
  fc.integer(),
).map(([base, a, lens, transposed, seed]) => {
  const axis = a % base.length;
  const shapes = lens.map((n) => base.map((d, i) => (i === axis ? n : d)));
  return { axis, shapes, transposed, seed };
});

function valuesFor(shape: readonly number[], seed: number): Float32Array {
  const n = size(shape);
  const out = new Float32Array(n);
  let s = (seed >>> 0) || 7;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = Math.fround((s / 2 ** 32) * 6 - 3);
  }
  return out;
}

/** A tensor with the given values; when `transposed`, a non-contiguous view of them. */
function make(values: Float32Array, shape: number[], transposed: boolean): mg.Tensor {
  if (!transposed || shape.length < 2) return mg.tensor(values, { shape });
  // Store the transpose of the last two axes, then view it back transposed.
  const r = shape.length;
  const t = [...shape];
  [t[r - 2], t[r - 1]] = [t[r - 1], t[r - 2]];
  const ref = nd(values, shape);
  const stored = new Float32Array(values.length);
  const rows = shape[r - 2];
  const cols = shape[r - 1];
  const outer = values.length / (rows * cols || 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        stored[o * rows * cols + j * rows + i] = ref.data[o * rows * cols + i * cols + j];
      }
    }
  }
  const base = mg.tensor(stored, { shape: t });
  const view = base.transpose(-2, -1);
  base.dispose();
  return view;
}

Deno.test("concat matches the reference on random shapes, axes and views (exact)", async () => {
  await gpu();
  await check(arbConcatCase, async ({ axis, shapes, transposed, seed }) => {
    const vals = shapes.map((s, i) => valuesFor(s, seed + i));
    const xs = shapes.map((s, i) => make(vals[i], s, transposed && i === 0));
    const out = mg.concat(xs, axis - shapes[0].length * (seed & 1));
    const ref = concatRef(shapes.map((s, i) => nd(vals[i], s)), axis);
    await assertTensorClose(out, ref, EXACT, `concat ${JSON.stringify(shapes)} axis ${axis}`);
    for (const t of [...xs, out]) t.dispose();
  }, 20);
});

Deno.test("concat backward gives each input its slice of the gradient (exact)", async () => {
  await gpu();
  await check(arbConcatCase, async ({ axis, shapes, seed }) => {
    const xs = shapes.map((s, i) =>
      mg.tensor(valuesFor(s, seed + i), { shape: s, requiresGrad: true })
    );
    const out = mg.concat(xs, axis);
    const gv = valuesFor(out.shape as number[], seed ^ 0x5bd1);
    const g = mg.tensor(gv, { shape: out.shape });
    out.backward(g);
    const refs = concatVjp(nd(gv, out.shape), shapes.map((s) => s[axis]), axis);
    for (let i = 0; i < xs.length; i++) {
      await assertTensorClose(xs[i].grad!, refs[i], EXACT, `grad of xs[${i}]`);
    }
    for (const t of [...xs, out, g]) t.dispose();
  }, 15);
});

Deno.test("concat/split reference vjps match central differences (float64, atol 1e-6)", () => {
  fc.assert(
    fc.property(arbConcatCase, ({ axis, shapes, seed }) => {
      const xs = shapes.map((s, i) => nd(valuesFor(s, seed + i), s));
      const outShape = concatRef(xs, axis).shape;
      const g = nd(valuesFor(outShape, seed + 99), outShape);
      const vjp = concatVjp(g, shapes.map((s) => s[axis]), axis);
      xs.forEach((x, i) => {
        const f = (v: NDArray) => dot(concatRef(xs.map((y, j) => (j === i ? v : y)), axis), g);
        assertClose(vjp[i].data, numericGrad(f, x), { rtol: 1e-6, atol: 1e-6 }, `concat x${i}`);
      });
      const whole = concatRef(xs, axis);
      const lengths = shapes.map((s) => s[axis]);
      const gs = splitRef(g, lengths, axis);
      const f = (v: NDArray) =>
        splitRef(v, lengths, axis).reduce((acc, p, i) => acc + dot(p, gs[i]), 0);
      assertClose(splitVjp(gs, axis).data, numericGrad(f, whole), { rtol: 1e-6, atol: 1e-6 });
    }),
    { numRuns: 20 },
  );
});

Deno.test("stack matches the reference and its backward unstacks the gradient (exact)", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 0, maxLength: 3 }),
      fc.integer({ min: 1, max: 4 }),
      fc.nat(),
      fc.integer(),
    ),
    async ([shape, count, a, seed]) => {
      const axis = a % (shape.length + 1);
      const vals = [...Array(count).keys()].map((i) => valuesFor(shape, seed + i));
      const xs = vals.map((v) => mg.tensor(v, { shape, requiresGrad: true }));
      const out = mg.stack(xs, axis - (seed & 1 ? shape.length + 1 : 0));
      const ref = stackRef(vals.map((v) => nd(v, shape)), axis);
      await assertTensorClose(out, ref, EXACT, `stack ${shape} x${count} axis ${axis}`);
      const gv = valuesFor(ref.shape, seed + 50);
      const g = mg.tensor(gv, { shape: ref.shape });
      out.backward(g);
      const pieces = concatVjp(nd(gv, ref.shape), xs.map(() => 1), axis);
      for (let i = 0; i < count; i++) {
        await assertTensorClose(xs[i].grad!, new NDArray(pieces[i].data, shape), EXACT, `g${i}`);
      }
      for (const t of [...xs, out, g]) t.dispose();
    },
    15,
  );
});

Deno.test("split by size (torch.split: last piece smaller) and by sizes; backward (exact)", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 3 }),
      fc.nat(),
      fc.integer({ min: 1, max: 4 }),
      fc.boolean(),
      fc.integer(),
    ),
    async ([shape, a, piece, bySizes, seed]) => {
      const axis = a % shape.length;
      const n = shape[axis];
      const sizes = bySizes ? splitSizes(n, piece).reverse() : piece;
      const v = valuesFor(shape, seed);
      const x = mg.tensor(v, { shape, requiresGrad: true });
      const parts = mg.split(x, sizes, axis);
      const refs = splitRef(nd(v, shape), sizes, axis);
      if (parts.length !== refs.length) throw new Error(`${parts.length} pieces, ${refs.length}`);
      for (let i = 0; i < refs.length; i++) {
        await assertTensorClose(parts[i], refs[i], EXACT, `piece ${i} of ${shape} by ${sizes}`);
      }
      // Backward: loss = sum_i <piece_i, g_i>, so x.grad = concat(g_i).
      const gvs = refs.map((r, i) => valuesFor(r.shape, seed + 10 + i));
      const gs = gvs.map((gv, i) => mg.tensor(gv, { shape: refs[i].shape }));
      const terms = parts.map((p, i) => p.mul(gs[i]).sum());
      let loss = terms[0];
      for (const t of terms.slice(1)) loss = loss.add(t);
      loss.backward();
      const want = splitVjp(gvs.map((gv, i) => nd(gv, refs[i].shape)), axis);
      await assertTensorClose(x.grad!, want, EXACT, "split grad");
      for (const t of [x, ...parts, ...gs, ...terms, loss]) t.dispose();
    },
    15,
  );
});

Deno.test("concat of i32 tensors and of strided views along the last axis (exact)", async () => {
  await gpu();
  const a = mg.tensor([[1, 2], [3, 4]], { dtype: "i32" });
  const b = mg.tensor([[5], [6]], { dtype: "i32" });
  const c = mg.concat([a, b], -1);
  assertClose(await c.data(), [1, 2, 5, 3, 4, 6], EXACT, "i32 concat");
  const at = a.transpose();
  const d = mg.concat([at, at], 0);
  assertClose(await d.data(), [1, 3, 2, 4, 1, 3, 2, 4], EXACT, "transposed concat");
  if (c.dtype !== "i32") throw new Error(`dtype ${c.dtype}`);
  for (const t of [a, b, c, at, d]) t.dispose();
});

Deno.test("concat/stack/split forward+backward keep memory flat", async () => {
  await gpu();
  const run = () => {
    const a = mg.randn([3, 4], { seed: 1, requiresGrad: true });
    const b = mg.randn([3, 2], { seed: 2, requiresGrad: true });
    const c = mg.concat([a, b], 1);
    const s = mg.stack([c, c], 0);
    const parts = mg.split(s, [1, 1], 0);
    const loss = parts[0].sum();
    loss.backward();
    for (const t of [a.grad!, b.grad!, a, b, c, s, ...parts, loss]) t.dispose();
  };
  await assertMemoryFlat(run);
});

Deno.test("concat/stack/split reject bad input with MoongradError naming the op", async () => {
  await gpu();
  const a = mg.zeros([2, 3]);
  const b = mg.zeros([3, 3]);
  const i = mg.zeros([2, 3], { dtype: "i32" });
  const s = mg.tensor(1);
  const cases: [string, () => unknown, RegExp][] = [
    ["concat", () => mg.concat([], 0), /non-empty/],
    ["concat", () => mg.concat([a, b], 1), /\[3, 3\].*every axis but 1/],
    ["concat", () => mg.concat([a, i], 0), /dtype i32/],
    ["concat", () => mg.concat([a, a], 2), /axis 2 is out of range/],
    ["concat", () => mg.concat([s, s], 0), /zero-dimensional/],
    ["concat", () => mg.concat([a, mg.zeros([2])], 0), /must match/],
    ["stack", () => mg.stack([a, b]), /\[3, 3\]/],
    ["stack", () => mg.stack([a, a], 3), /out of range/],
    ["split", () => mg.split(a, 0, 1), /positive integer/],
    ["split", () => mg.split(a, [1, 1], 1), /summing to 3/],
    ["split", () => mg.split(a, [4, -1], 1), /non-negative/],
    ["split", () => mg.split(s, 1), /zero-dimensional/],
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
  for (const t of [a, b, i, s]) t.dispose();
});
