/**
 * mg.fuse: fused pointwise chains against float64 references (forward), reference vjps
 * (themselves checked by central differences in float64), the eager chain of the same ops
 * (NaN/±Inf positions and values, gradients), broadcasting and strided views, dtypes, zero
 * sizes, one compile per layout (not per shape), flat memory, and errors.
 *
 * The chains are written once, as functions over anything with Tensor's pointwise methods:
 * they run fused (FuseExpr), eager (Tensor) and as the float64 reference (`R` below, a scalar
 * reverse-mode tape over the reference derivatives of tests/reference/elementwise.ts).
 *
 * Tolerances (f32): each op is within a few ulp (transcendentals ≤ 2e-7 relative after range
 * reduction), chains have ≤ 7 ops on values of magnitude ≤ ~30: forward rtol 2e-5 + atol 2e-5.
 * Gradients add ≤ 3 paths per element and sum ≤ 6³ broadcast terms: rtol 1e-4 + atol 1e-4.
 * Fused vs eager: the same WGSL per op in f32, but the compiler may contract a·b + c into an
 * FMA inside one kernel: rtol/atol 1e-6 on finite values, NaN/±Inf positions exact. f16:
 * 4e-3 (11-bit mantissa).
 */
import * as mg from "../mod.ts";
import { compiledKernelCount } from "../core/kernel.ts";
import {
  arbBroadcastPair,
  arbSpecialValues,
  assertClose,
  assertMemoryFlat,
  assertMgError,
  check,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import {
  broadcastShape,
  nd,
  type NDArray,
  numericGrad,
  size,
  unravel,
} from "./reference/ndarray.ts";
import { BINARY, UNARY } from "./reference/elementwise.ts";

const FWD = { rtol: 2e-5, atol: 2e-5 };
const GRAD = { rtol: 1e-4, atol: 1e-4 };
const SAME = { rtol: 1e-6, atol: 1e-6 };
const F16 = { rtol: 4e-3, atol: 4e-3 };

// ---- a float64 scalar reverse-mode tape with Tensor's method names -------------------------

type Num = R | number;
let tapeId = 0;

/** A float64 scalar that records its parents and local derivatives. */
class R {
  readonly id = tapeId++;
  constructor(
    readonly v: number,
    readonly parents: [R, number][] = [],
    readonly bool = false,
  ) {}
  static of(x: Num): R {
    return x instanceof R ? x : new R(x);
  }
  #bin(name: string, o: Num): R {
    const b = R.of(o);
    const ref = BINARY[name];
    return new R(ref.f(this.v, b.v), [[this, ref.da(this.v, b.v)], [b, ref.db(this.v, b.v)]]);
  }
  #un(name: string): R {
    const ref = UNARY[name];
    return new R(ref.f(this.v), [[this, ref.df(this.v)]]);
  }
  #cmp(f: (a: number, b: number) => boolean, o: Num): R {
    return new R(f(this.v, R.of(o).v) ? 1 : 0, [], true);
  }
  add(o: Num) {
    return this.#bin("add", o);
  }
  sub(o: Num) {
    return this.#bin("sub", o);
  }
  mul(o: Num) {
    return this.#bin("mul", o);
  }
  div(o: Num) {
    return this.#bin("div", o);
  }
  pow(o: Num) {
    return this.#bin("pow", o);
  }
  maximum(o: Num) {
    return this.#bin("maximum", o);
  }
  minimum(o: Num) {
    return this.#bin("minimum", o);
  }
  gt(o: Num) {
    return this.#cmp((a, b) => a > b, o);
  }
  lt(o: Num) {
    return this.#cmp((a, b) => a < b, o);
  }
  neg() {
    return this.#un("neg");
  }
  abs() {
    return this.#un("abs");
  }
  exp() {
    return this.#un("exp");
  }
  log() {
    return this.#un("log");
  }
  sqrt() {
    return this.#un("sqrt");
  }
  rsqrt() {
    return this.#un("rsqrt");
  }
  sin() {
    return this.#un("sin");
  }
  cos() {
    return this.#un("cos");
  }
  tanh() {
    return this.#un("tanh");
  }
  sigmoid() {
    return this.#un("sigmoid");
  }
  silu() {
    return this.#un("silu");
  }
  gelu(approximate: "none" | "tanh" = "none") {
    return this.#un(approximate === "tanh" ? "gelu_tanh" : "gelu");
  }
  relu() {
    return this.#un("relu");
  }
  square() {
    return this.#un("square");
  }
  where(a: Num, b: Num): R {
    const [x, y] = [R.of(a), R.of(b)];
    return this.v ? new R(x.v, [[x, 1]]) : new R(y.v, [[y, 1]]);
  }
}

/** d out / d leaf for every leaf, by reverse accumulation over the tape. */
function backprop(out: R, g: number): Map<R, number> {
  const adj = new Map<R, number>([[out, g]]);
  const order: R[] = [];
  const seen = new Set<R>();
  const visit = (r: R) => {
    if (seen.has(r)) return;
    seen.add(r);
    for (const [p] of r.parents) visit(p);
    order.push(r);
  };
  visit(out);
  for (const r of order.reverse()) {
    const a = adj.get(r) ?? 0;
    for (const [p, d] of r.parents) adj.set(p, (adj.get(p) ?? 0) + a * d);
  }
  return adj;
}

// deno-lint-ignore no-explicit-any
type Chain = (...xs: any[]) => any;

/** `c.where(a, b)` on expressions and the tape; mg.where on tensors (no method there). */
// deno-lint-ignore no-explicit-any
type Any = any;
const sel = (
  c: Any,
  a: Any,
  b: Any,
) => (c instanceof mg.Tensor ? mg.where(c, a, b) : c.where(a, b));

/** Forward of a chain in float64 over broadcast inputs. */
function refForward(fn: Chain, xs: NDArray[]): NDArray {
  const shape = broadcastShape(...xs.map((x) => x.shape));
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) {
    out[i] = fn(...xs.map((x) => new R(x.data[bcastIndex(x.shape, shape, i)]))).v;
  }
  return nd(out, shape);
}

/** Reference vjp: each input's gradient (summed over its broadcast axes) for upstream g. */
function refVjp(fn: Chain, xs: NDArray[], g: NDArray): NDArray[] {
  const grads = xs.map((x) => new Float64Array(x.data.length));
  for (let i = 0; i < g.data.length; i++) {
    const at = xs.map((x) => bcastIndex(x.shape, g.shape, i));
    const leaves = xs.map((x, k) => new R(x.data[at[k]]));
    const adj = backprop(fn(...leaves), g.data[i]);
    leaves.forEach((l, k) => (grads[k][at[k]] += adj.get(l) ?? 0));
  }
  return grads.map((d, k) => nd(d, xs[k].shape));
}

/** Index into an input of `shape` for flat output element i of `outShape`. */
function bcastIndex(shape: readonly number[], outShape: readonly number[], i: number): number {
  const coords = unravel(i, outShape).slice(outShape.length - shape.length);
  let idx = 0;
  for (let d = 0; d < shape.length; d++) idx = idx * shape[d] + (shape[d] === 1 ? 0 : coords[d]);
  return idx;
}

/** Chains over three inputs, each smooth on the drawn values (a, b, c in [-2, 2]). */
const CHAINS: Record<string, Chain> = {
  addMul: (a, b, c) => a.add(b).mul(c),
  swiglu: (a, b, c) => a.silu().mul(b).add(c.mul(0.5)),
  gated: (a, b, c) => sel(a.add(0.25).gt(0), a.mul(b), c.tanh()),
  extremes: (a, b, c) => a.maximum(b).sub(c.minimum(0.5)).square(),
  ratio: (a, b, c) => a.div(b.abs().add(1)).sigmoid().mul(c).neg(),
  power: (a, b, c) => a.abs().add(0.5).pow(b).add(c.exp().log()),
  trig: (a, b, c) => a.sin().mul(b.cos()).add(c.gelu()).sub(a.gelu("tanh")),
  roots: (a, b, c) => a.square().add(1).sqrt().mul(b.square().add(0.5).rsqrt()).add(c.relu()),
  reuse: (a, b, c) => a.mul(a).mul(b).add(a.exp().mul(c)),
};

const fused = Object.fromEntries(
  Object.entries(CHAINS).map(([k, f]) => [k, mg.fuse(f as (...x: mg.FuseExpr[]) => mg.FuseExpr)]),
);

/** Three broadcastable shapes (one possibly of lower rank). */
const arbShapes = fc.tuple(arbBroadcastPair(3, 5), fc.integer({ min: 0, max: 2 })).map(
  ([[a, b], pick]) => (pick === 0 ? [a, b, a] : pick === 1 ? [b, a, b] : [a, a, b]),
);

Deno.test("reference vjps of the chains match central differences (float64)", () => {
  for (const [name, fn] of Object.entries(CHAINS)) {
    const xs = [[2, 3], [3], [2, 1]].map((s, k) =>
      // Away from the kinks of abs/relu/maximum/minimum and the where threshold.
      nd(Array.from(seededValues(size(s), 11 + k, -2, 2)).map((v) => v + (v > 0 ? 0.05 : -0.05)), s)
    );
    const g = nd(seededValues(6, 5, -1, 1), [2, 3]);
    const ref = refVjp(fn, xs, g);
    xs.forEach((x, k) => {
      const loss = (v: NDArray) => {
        const args = xs.map((y, j) => (j === k ? v : y));
        const out = refForward(fn, args);
        return out.data.reduce((s, o, i) => s + o * g.data[i], 0);
      };
      assertClose(ref[k].data, numericGrad(loss, x), { rtol: 1e-5, atol: 1e-6 }, `${name} d${k}`);
    });
  }
});

Deno.test("fused chains match the float64 reference and its vjp, with broadcasting", async () => {
  await gpu();
  const arb = fc.record({
    shapes: arbShapes,
    chain: fc.constantFrom(...Object.keys(CHAINS)),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ shapes, chain, seed }) => {
    const fn = CHAINS[chain];
    const vals = shapes.map((s, k) => seededValues(size(s), seed + k, -2, 2));
    const refs = vals.map((v, k) => nd(v, shapes[k]));
    const xs = vals.map((v, k) => mg.tensor(v, { shape: shapes[k], requiresGrad: true }));
    const y = fused[chain](...xs);
    const yr = refForward(fn, refs);
    assertClose(await y.data(), yr.data, FWD, `${chain} y`);
    const g = nd(seededValues(yr.data.length, seed + 7, -1, 1), yr.shape);
    y.backward(mg.tensor(Float32Array.from(g.data), { shape: g.shape }));
    const gr = refVjp(fn, refs, g);
    for (let k = 0; k < 3; k++) {
      if (xs[k].grad?.shape.join() !== shapes[k].join()) {
        throw new Error(`${chain} d${k}: shape [${xs[k].grad?.shape}] != [${shapes[k]}]`);
      }
      assertClose(await xs[k].grad!.data(), gr[k].data, GRAD, `${chain} d${k} ${shapes}`);
    }
    for (const t of [...xs, y]) t.dispose();
  }, 40);
});

Deno.test("fused = eager on strided views, odd sizes, unaligned offsets and expanded gradients", async () => {
  await gpu();
  const base = mg.tensor(seededValues(7 * 12, 3, -2, 2), { shape: [7, 12] });
  const big = mg.tensor(seededValues(2052, 5, -2, 2));
  const views: [string, mg.Tensor[]][] = [
    ["dense vec4", [base, base.add(1), base.mul(0.5)]],
    ["transposed", [base.transpose(0, 1), base.transpose(0, 1).exp(), mg.ones([12, 7])]],
    ["offset 1 (no vec4)", [base.reshape([84]).slice(0, 1, 81), mg.ones([80]), mg.ones([80])]],
    ["odd size", [base.slice(1, 0, 5), base.slice(1, 5, 10), mg.full([7, 1], 2)]],
    ["row broadcast", [base, mg.tensor(seededValues(12, 4), { shape: [12] }), mg.full([], 3)]],
    // 2048 = 2 workgroups of 256 vec4s at offset 0: the exact-grid kernel (no bounds check).
    ["exact grid", [big.slice(0, 0, 2048), big.slice(0, 0, 2048).exp(), mg.full([2048], 0.5)]],
    ["2048 at offset 4 (vec4, not exact)", [
      big.slice(0, 4, 2052),
      mg.ones([2048]),
      big.slice(0, 0, 2048),
    ]],
  ];
  for (const [what, xs] of views) {
    for (const [name, fn] of Object.entries(CHAINS)) {
      const leaves = xs.map((x) => x.detach().requiresGrad_());
      const f = fused[name](...leaves);
      const e = fn(...leaves) as mg.Tensor;
      assertClose(await f.data(), await e.data(), SAME, `${what} ${name}`);
      // sum() makes an expanded (stride 0) upstream gradient.
      f.sum().backward();
      const gf = await Promise.all(leaves.map((l) => l.grad!.data()));
      leaves.forEach((l) => (l.grad = null));
      e.sum().backward();
      for (let k = 0; k < 3; k++) {
        assertClose(
          gf[k],
          await leaves[k].grad!.data(),
          { rtol: 1e-5, atol: 1e-5 },
          `${what} ${name} d${k}`,
        );
      }
    }
  }
});

Deno.test("NaN and ±Inf propagate through fused chains as through the eager ops (values and gradients)", async () => {
  await gpu();
  const chains: Chain[] = [
    (a, b, c) => a.maximum(b).mul(c).relu(),
    (a, b, c) => a.minimum(b).add(c.exp()).pow(2),
    (a, b, c) => a.abs().add(0.5).pow(b).sub(c.log()),
    (a, b, c) => sel(a.gt(b), a.sqrt(), c.tanh()).div(b),
  ];
  const arb = fc.record({
    vals: fc.tuple(arbSpecialValues(24), arbSpecialValues(24), arbSpecialValues(6)),
    k: fc.integer({ min: 0, max: chains.length - 1 }),
  });
  await check(arb, async ({ vals, k }) => {
    const shapes = [[4, 6], [4, 6], [6]];
    const xs = vals.map((v, j) => mg.tensor(v, { shape: shapes[j], requiresGrad: true }));
    const f = mg.fuse(chains[k] as (...x: mg.FuseExpr[]) => mg.FuseExpr)(...xs);
    const e = chains[k](...xs) as mg.Tensor;
    assertClose(await f.data(), await e.data(), SAME, `chain ${k}`);
    const g = mg.tensor(seededValues(24, 9, 0.5, 2), { shape: [4, 6] });
    f.backward(g);
    const gf = await Promise.all(xs.map((x) => x.grad!.data()));
    xs.forEach((x) => (x.grad = null));
    e.backward(g);
    for (let j = 0; j < 3; j++) {
      assertClose(gf[j], await xs[j].grad!.data(), SAME, `chain ${k} d${j}`);
    }
    for (const t of [...xs, f, e, g]) t.dispose();
  }, 20);
});

Deno.test("dtypes: f16 computes in f32, i32 and bool chains, numbers as arguments", async () => {
  const info = await gpu();
  const ia = mg.tensor([7, -7, 3, 10, 0], { dtype: "i32" });
  const ib = mg.tensor([2, 2, -4, 3, 1], { dtype: "i32" });
  const iy = mg.fuse((a, b, c) => a.div(b).add(c).mul(b).maximum(a))(ia, ib, 5);
  if (iy.dtype !== "i32") throw new Error(`i32 in, got ${iy.dtype}`);
  // Integer division truncates: (7/2 + 5)·2 = 16, (−7/2 + 5)·2 = 4, (3/−4 + 5)·−4 = −20 → 3.
  assertClose(await iy.data(), [16, 4, 3, 24, 5], { rtol: 0, atol: 0 }, "i32");
  const cmp = mg.fuse((a, b) => a.gt(b))(mg.tensor([1, 5]), mg.tensor([2, 2]));
  if (cmp.dtype !== "bool") throw new Error(`compare gives bool, got ${cmp.dtype}`);
  assertClose(await cmp.data(), [0, 1], { rtol: 0, atol: 0 }, "bool out");
  const sel = mg.fuse((c, a) => c.where(a, a.neg()));
  assertClose(await sel(cmp, mg.tensor([3, 4])).data(), [-3, 4], { rtol: 0, atol: 0 }, "bool in");
  const scale = mg.fuse((x, s) => x.mul(s).add(1));
  const x = mg.tensor([1, 2, 3], { requiresGrad: true });
  assertClose(await scale(x, 2).data(), [3, 5, 7], { rtol: 0, atol: 0 }, "s = 2");
  const y = scale(x, -0.5);
  assertClose(await y.data(), [0.5, 0, -0.5], { rtol: 0, atol: 0 }, "s = -0.5");
  y.sum().backward();
  assertClose(await x.grad!.data(), [-0.5, -0.5, -0.5], { rtol: 0, atol: 0 }, "d/dx");
  if (info.f16) {
    const h = [0, 1, 2].map((k) =>
      mg.tensor(seededValues(40, k + 2, -2, 2), { shape: [5, 8] }).cast("f16")
    );
    const out = fused.swiglu(...h);
    if (out.dtype !== "f16") throw new Error(`f16 in, got ${out.dtype}`);
    const refs = await Promise.all(h.map(async (t) => nd(await t.cast("f32").data(), [5, 8])));
    assertClose(await out.cast("f32").data(), refForward(CHAINS.swiglu, refs).data, F16, "f16");
  }
});

Deno.test("zero-size inputs give empty outputs and zero gradients", async () => {
  await gpu();
  const a = mg.zeros([0, 3], { requiresGrad: true });
  const b = mg.ones([1, 3], { requiresGrad: true });
  const y = fused.addMul(a, b, 2);
  if (y.shape.join() !== "0,3") throw new Error(`shape [${y.shape}]`);
  y.sum().backward();
  if (a.grad!.shape.join() !== "0,3") throw new Error(`a.grad [${a.grad!.shape}]`);
  assertClose(await b.grad!.data(), [0, 0, 0], { rtol: 0, atol: 0 }, "b.grad");
});

Deno.test("new shapes reuse the compiled kernels; forward+backward leaves memory flat", async () => {
  await gpu();
  const run = (shapes: number[][]) => {
    const xs = shapes.map((s, k) =>
      mg.tensor(seededValues(size(s), k + 1), { shape: s, requiresGrad: true })
    );
    const y = fused.gated(...xs);
    const loss = y.sum();
    loss.backward();
    for (const t of [...xs, y, loss]) t.dispose();
  };
  run([[6, 8], [6, 8], [8]]);
  run([[6, 3], [6, 3], [3]]); // not vec4
  await mg.sync();
  const before = compiledKernelCount();
  run([[2, 5, 4], [2, 5, 4], [4]]);
  run([[9, 12], [9, 12], [12]]);
  run([[3, 7], [3, 7], [7]]);
  run([[3, 1, 5], [3, 1, 5], [5]]);
  await mg.sync();
  if (compiledKernelCount() !== before) {
    throw new Error(`new shapes compiled ${compiledKernelCount() - before} kernels`);
  }
  await assertMemoryFlat(() => run([[4, 8], [4, 8], [8]]));
});

Deno.test("the same tensor in several places, gradients accumulate; noGrad records nothing", async () => {
  await gpu();
  const x = mg.tensor([1, 2, 3], { requiresGrad: true });
  const y = fused.addMul(x, x, x); // (x + x)·x = 2x², d/dx = 4x
  y.sum().backward();
  assertClose(await x.grad!.data(), [4, 8, 12], { rtol: 0, atol: 0 }, "4x");
  const z = mg.noGrad(() => fused.addMul(x, x, x));
  if (z.requiresGrad || z.gradFn) throw new Error("noGrad recorded a node");
});

Deno.test("fuse rejects bad input with a MoongradError naming the op", async () => {
  await gpu();
  const f = mg.fuse((a, b) => a.add(b), { name: "pair" });
  assertMgError(() => f(mg.ones([2]), mg.ones([3])), "fuse(pair)", "broadcast");
  assertMgError(
    () => f(mg.ones([2]), mg.ones([2], { dtype: "i32" })),
    "fuse(pair).add",
    "different dtypes",
  );
  assertMgError(() => f(1, 2), "fuse(pair)", "at least one Tensor");
  assertMgError(
    () => mg.fuse((a) => a.exp())(mg.ones([2], { dtype: "i32" })),
    "fuse(fused).exp",
    "i32",
  );
  assertMgError(
    () => mg.fuse((_a: mg.FuseExpr) => 3 as unknown as mg.FuseExpr)(mg.ones([2])),
    "fuse(fused)",
    "must return",
  );
  assertMgError(() => mg.fuse((a) => a, { name: "bad name" }), "fuse", "name");
  assertMgError(() => mg.fuse((a) => a.where(a, a))(mg.ones([2])), "fuse(fused).where", "bool");
  const d = mg.ones([2]);
  d.dispose();
  assertMgError(() => f(d, mg.ones([2])), "fuse(pair)");
});
