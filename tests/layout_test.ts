/**
 * View ops against float64 references: reshape (with −1, of contiguous and non-contiguous
 * input), permute, transpose, slice (negative indices, steps, clamping), expand, squeeze,
 * unsqueeze. Checks the values, the shapes and strides, that documented views share the
 * input's storage (no copy), and the backward (GPU vs reference vjp, reference vjp vs
 * finite differences). All of these move values without arithmetic, so every comparison is
 * exact except the finite differences (rounding eps·|Σ|/h, atol 1e-6).
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { arbShape, arbValues, assertClose, assertMgError, check, fc, gpu } from "./util.ts";
import {
  broadcastTo,
  dot,
  nd,
  type NDArray,
  numericGrad,
  permute,
  size,
  sumTo,
} from "./reference/ndarray.ts";
import { sliceRef, sliceVjp } from "./reference/elementwise.ts";

const EXACT = { rtol: 0, atol: 0 };
const FD_TOL = { rtol: 1e-6, atol: 1e-6 };

function f32(values: ArrayLike<number>, shape: readonly number[], requiresGrad = false) {
  return mg.tensor(Float32Array.from(values), { shape, requiresGrad });
}

function upstream(shape: readonly number[]): NDArray {
  return nd(Array.from({ length: size(shape) }, (_, i) => (i % 11) - 5 + 0.5), shape);
}

function contiguousStrides(shape: readonly number[]): number[] {
  return shape.map((_, i) => size(shape.slice(i + 1)));
}

/**
 * Runs a view op on a leaf of `shape`/`values`: checks forward against `ref`, storage
 * sharing when `shares`, backward against `vjp`, and `vjp` against finite differences.
 */
async function checkView(
  what: string,
  shape: number[],
  values: number[],
  op: (x: mg.Tensor) => mg.Tensor,
  ref: (x: NDArray) => NDArray,
  vjp: (g: NDArray) => NDArray,
  shares: boolean,
  input: (leaf: mg.Tensor) => mg.Tensor = (t) => t,
): Promise<{ strides: number[] }> {
  const before = mg.memory().inUseBytes;
  const leaf = f32(values, shape, true);
  const x = input(leaf);
  const out = op(x);
  const xr = nd(values, shape);
  const want = ref(xr);
  assert.deepEqual([...out.shape], [...want.shape], `${what}: shape`);
  assertClose(await out.data(), want, EXACT, `${what}: values`);
  assert.equal(out.storage() === x.storage(), shares, `${what}: shares storage = ${shares}`);
  const up = upstream(want.shape);
  const upT = f32(up.data, up.shape);
  out.backward(upT);
  const g = vjp(up);
  assertClose(await leaf.grad!.data(), g, EXACT, `${what}: grad`);
  const fd = numericGrad((v) => dot(ref(v), up), xr, 1e-3);
  assertClose(g.data, fd.data, FD_TOL, `${what}: ref vjp vs fd`);
  const strides = [...out.strides];
  for (const t of [leaf, x, out, upT]) t.dispose();
  leaf.zeroGrad();
  const now = mg.memory().inUseBytes;
  assert.equal(now, before, `${what}: ${now - before} bytes leaked`);
  return { strides };
}

/** A shape and a random reshape target of the same size (one axis possibly −1). */
const arbReshape = arbShape(4, 6).chain((s) => {
  const n = size(s);
  const primes: number[] = [];
  let m = n;
  for (let p = 2; m > 1; p++) while (m % p === 0) (primes.push(p), m /= p);
  return fc.tuple(
    fc.constant(s),
    fc.integer({ min: 0, max: 4 }),
    fc.array(fc.nat(3), { minLength: primes.length, maxLength: primes.length }),
    fc.option(fc.nat(3), { nil: undefined }),
    arbValues(n),
  ).map(([shape, rank, buckets, minus, values]) => {
    const r = primes.length > 0 ? Math.max(rank, 1) : rank;
    const target = new Array<number>(r).fill(1);
    primes.forEach((p, i) => (target[buckets[i] % r] *= p));
    const arg = [...target];
    if (minus !== undefined && r > 0) arg[minus % r] = -1;
    return { shape, target, arg, values };
  });
});

Deno.test("reshape of a contiguous tensor is a view (shared storage), −1 inferred; exact backward", async () => {
  await gpu();
  await check(arbReshape, async ({ shape, target, arg, values }) => {
    const r = await checkView(
      `reshape [${shape}] → ${JSON.stringify(arg)}`,
      shape,
      values,
      (x) => x.reshape(arg),
      (x) => nd(x.data, target),
      (g) => nd(g.data, shape),
      true,
    );
    assert.deepEqual(r.strides, contiguousStrides(target));
  }, 25);
});

Deno.test("reshape of a non-contiguous (transposed) tensor copies in row-major order of the view", async () => {
  await gpu();
  await check(
    arbReshape.filter(({ shape }) => shape.filter((d) => d > 1).length >= 2),
    async ({ shape, target, arg, values }) => {
      // The leaf has the reversed shape; the op sees its transpose (logical shape `shape`).
      const rev = shape.map((_, i) => shape.length - 1 - i);
      const leafShape = [...shape].reverse();
      await checkView(
        `reshape of transposed [${shape}] → ${JSON.stringify(arg)}`,
        leafShape,
        values,
        (x) => x.reshape(arg),
        (x) => nd(permute(x, rev).data, target),
        (g) => permute(nd(g.data, shape), rev),
        false,
        (leaf) => leaf.permute(rev),
      );
    },
    20,
  );
});

Deno.test("permute and transpose are views with permuted strides; backward permutes back", async () => {
  await gpu();
  await check(
    arbShape(4, 5).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.shuffledSubarray([...s.keys()], { minLength: s.length, maxLength: s.length }),
        fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }),
        arbValues(size(s)),
      )
    ),
    async ([s, axes, negs, values]) => {
      const arg = axes.map((a, i) => (negs[i] ? a - s.length : a));
      const inverse = new Array<number>(s.length);
      axes.forEach((a, i) => (inverse[a] = i));
      const r = await checkView(
        `permute [${s}] ${JSON.stringify(arg)}`,
        s,
        values,
        (x) => x.permute(arg),
        (x) => permute(x, axes),
        (g) => permute(g, inverse),
        true,
      );
      const strides = contiguousStrides(s);
      assert.deepEqual(r.strides, axes.map((a) => strides[a]));
      if (s.length >= 2) {
        const i = axes[0];
        const j = axes[s.length - 1];
        const swap = [...s.keys()];
        swap[i] = j;
        swap[j] = i;
        await checkView(
          `transpose [${s}] ${i} ${j}`,
          s,
          values,
          (x) => x.transpose(i, j),
          (x) => permute(x, swap),
          (g) => permute(g, swap),
          true,
        );
      }
    },
    20,
  );
});

Deno.test("transpose() swaps the last two axes; rank < 2 is an error", async () => {
  await gpu();
  const x = mg.tensor([[[1, 2, 3], [4, 5, 6]]]);
  const t = x.transpose();
  assert.deepEqual(t.shape, [1, 3, 2]);
  assert.deepEqual(await t.toArray(), [[[1, 4], [2, 5], [3, 6]]]);
  const v = mg.tensor([1, 2]);
  assertMgError(() => v.transpose(), "transpose", "[2]");
  assertMgError(() => x.permute([0, 1]), "permute", "[1, 2, 3]");
  assertMgError(() => x.permute([0, 1, 1]), "permute", "repeat");
  assertMgError(() => x.permute([0, 1, 3]), "permute", "3");
  for (const a of [x, t, v]) a.dispose();
});

Deno.test("slice with negative/out-of-range bounds and steps is a view with an offset; backward scatters", async () => {
  await gpu();
  await check(
    arbShape(3, 7).filter((s) => s.length > 0).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.integer({ min: -s.length, max: s.length - 1 }),
        fc.integer({ min: -9, max: 9 }),
        fc.option(fc.integer({ min: -9, max: 9 }), { nil: undefined }),
        fc.integer({ min: 1, max: 3 }),
        arbValues(size(s)),
      )
    ),
    async ([s, axis, start, end, step, values]) => {
      const ax = axis < 0 ? axis + s.length : axis;
      const n = s[ax];
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
      const b = clamp(start);
      const e = Math.max(clamp(end ?? n), b);
      const r = await checkView(
        `slice [${s}] axis ${axis} ${start}:${end}:${step}`,
        s,
        values,
        (x) => x.slice(axis, start, end, step),
        (x) => sliceRef(x, ax, b, e, step),
        (g) => sliceVjp(s, ax, b, step, g),
        true,
      );
      const strides = contiguousStrides(s);
      assert.deepEqual(r.strides, strides.map((st, i) => (i === ax ? st * step : st)));
    },
    25,
  );
});

Deno.test("slice of a slice of a transposed tensor reads the right elements", async () => {
  await gpu();
  const x = mg.tensor(Float32Array.from({ length: 30 }, (_, i) => i), { shape: [5, 6] });
  const v = x.transpose().slice(0, -5, undefined, 2).slice(1, 1, -1);
  // xᵀ is 6×5; rows 1, 3, 5; columns 1..3.
  assert.deepEqual(await v.toArray(), [[7, 13, 19], [9, 15, 21], [11, 17, 23]]);
  assert.equal(v.storage(), x.storage());
  const c = v.exp().log();
  assertClose(
    await c.data(),
    [7, 13, 19, 9, 15, 21, 11, 17, 23],
    { rtol: 1e-6, atol: 0 },
    "op on view",
  );
  assertMgError(() => x.slice(0, 0, 3, 0), "slice", "step");
  assertMgError(() => x.slice(2, 0), "slice", "2");
  assertMgError(() => x.slice(0, 0.5), "slice", "0.5");
  for (const t of [x, v, c]) t.dispose();
});

Deno.test("expand broadcasts with zero strides (a view); backward sums back (exact)", async () => {
  await gpu();
  await check(
    arbShape(4, 5).chain((s) =>
      fc.tuple(
        fc.constant(s),
        fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }),
        fc.integer({ min: 0, max: 2 }),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 2, maxLength: 2 }),
        fc.boolean(),
      ).chain(([shape, ones, lead, leadDims, minus]) => {
        const src = shape.map((d, i) => (ones[i] ? 1 : d));
        const target = [...leadDims.slice(0, lead), ...shape];
        return fc.tuple(
          fc.constant(src),
          fc.constant(target),
          fc.constant(minus),
          arbValues(size(src)),
        );
      })
    ),
    async ([src, target, minus, values]) => {
      const lead = target.length - src.length;
      // −1 keeps an existing axis's size.
      const arg = target.map((d, i) => (minus && i >= lead && src[i - lead] === d ? -1 : d));
      const r = await checkView(
        `expand [${src}] → ${JSON.stringify(arg)}`,
        src,
        values,
        (x) => x.expand(arg),
        (x) => broadcastTo(x, target),
        (g) => sumTo(g, src),
        true,
      );
      const strides = contiguousStrides(src);
      r.strides.forEach((st, i) => {
        const si = i - lead;
        const want = si < 0 || src[si] === 1 ? 0 : strides[si];
        assert.equal(st, want, `stride ${i}`);
      });
    },
    25,
  );
});

Deno.test("expand rejects incompatible shapes, lower rank and −1 on a new axis", async () => {
  await gpu();
  const x = mg.zeros([2, 1]);
  assertMgError(() => x.expand([3, 4]), "expand", "[2, 1]", "[3, 4]");
  assertMgError(() => x.expand([4]), "expand", "[2, 1]", "[4]");
  assertMgError(() => x.expand([-1, 2, 3]), "expand", "[-1, 2, 3]");
  assertMgError(() => x.expand([2.5, 2, 3]), "expand", "2.5");
  x.dispose();
});

Deno.test("squeeze and unsqueeze are views; backward restores the shape (exact)", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 0, maxLength: 5 }),
      fc.nat(5),
      fc.nat(6),
      fc.boolean(),
    ).chain(([s, sq, unsq, neg]) =>
      fc.tuple(fc.constant([s, sq, unsq, neg] as const), arbValues(size(s)))
    ),
    async ([[s, sq, unsq, neg], values]) => {
      // squeeze() drops every size-1 axis.
      const all = s.filter((d) => d !== 1);
      await checkView(
        `squeeze() [${s}]`,
        s,
        values,
        (x) => x.squeeze(),
        (x) => nd(x.data, all),
        (g) => nd(g.data, s),
        true,
      );
      // squeeze(axis) of a size-1 axis.
      const ones = [...s.keys()].filter((i) => s[i] === 1);
      if (ones.length > 0) {
        const ax = ones[sq % ones.length];
        const arg = neg ? ax - s.length : ax;
        const shape = s.filter((_, i) => i !== ax);
        await checkView(
          `squeeze(${arg}) [${s}]`,
          s,
          values,
          (x) => x.squeeze(arg),
          (x) => nd(x.data, shape),
          (g) => nd(g.data, s),
          true,
        );
      }
      // unsqueeze at any position 0..rank (negative: −1 appends).
      const pos = unsq % (s.length + 1);
      const arg = neg ? pos - (s.length + 1) : pos;
      const shape = [...s.slice(0, pos), 1, ...s.slice(pos)];
      const r = await checkView(
        `unsqueeze(${arg}) [${s}]`,
        s,
        values,
        (x) => x.unsqueeze(arg),
        (x) => nd(x.data, shape),
        (g) => nd(g.data, s),
        true,
      );
      assert.equal(r.strides.length, s.length + 1);
    },
    25,
  );
  const x = mg.zeros([2, 1]);
  assertMgError(() => x.squeeze(0), "squeeze", "size 2");
  assertMgError(() => x.unsqueeze(4), "unsqueeze", "4");
  x.dispose();
});

Deno.test("reshape rejects wrong sizes and bad −1 use naming both shapes", async () => {
  await gpu();
  const x = mg.zeros([2, 3]);
  assertMgError(() => x.reshape([4, 2]), "reshape", "[2, 3]", "[4, 2]");
  assertMgError(() => x.reshape([-1, -1]), "reshape", "[-1, -1]");
  assertMgError(() => x.reshape([-1, 4]), "reshape", "[-1, 4]");
  assertMgError(() => x.reshape([1.5, 4]), "reshape", "1.5");
  const e = mg.zeros([0, 3]);
  const r = e.reshape([3, 0]);
  assert.deepEqual(r.shape, [3, 0]);
  assert.equal((await r.data()).length, 0);
  for (const t of [x, e, r]) t.dispose();
});

Deno.test("a view keeps the storage alive after its base is disposed", async () => {
  await gpu();
  const x = mg.tensor([[1, 2], [3, 4]]);
  const t = x.transpose();
  x.dispose();
  assert.deepEqual(await t.toArray(), [[1, 3], [2, 4]]);
  t.dispose();
});
