/**
 * NaN and ±Inf through the pointwise ops against the float64 references, whose special values
 * are PyTorch's (checked against PyTorch 1.13): unary math, relu and its gradient, maximum /
 * minimum (NaN wins; where either operand is NaN both get the whole gradient), pow's NaN
 * cases, clamp (NaN stays NaN, no gradient). Inputs mix finite values with NaN and ±Inf at
 * random positions. The kernels find NaN with bit tests that a NaN-assuming compiler cannot
 * fold, so wgpu/naga and Dawn/Tint (SwiftShader, whose exp(NaN) is +Inf) must agree.
 */
import * as mg from "../mod.ts";
import {
  arbBroadcastPair,
  arbShape,
  arbSpecialValues,
  assertClose,
  assertMgError,
  assertNoLeak,
  check,
  f32,
  fc,
  gpu,
  seededValues,
} from "./util.ts";
import { nd, permute, size, zip } from "./reference/ndarray.ts";
import { BINARY, binaryVjp, clampRef, clampVjp, UNARY } from "./reference/elementwise.ts";

/** Exact: max/min/clamp/relu select one of their inputs. */
const EXACT = { rtol: 0, atol: 0 };
/**
 * Unary math at special values: the point is NaN/±Inf (which must match exactly); finite
 * accuracy is tested in elementwise_test.ts, and Dawn's sin/cos are ~5e-5 off, so 1e-4.
 */
const SPECIAL = { rtol: 1e-4, atol: 1e-4 };
/** Gradients of maximum/minimum: sums of g·{0, ½, 1} over broadcast axes (≤ 6⁴ terms). */
const GRAD = { rtol: 1e-6, atol: 1e-6 };

function gpuUnary(name: string, x: mg.Tensor): mg.Tensor {
  if (name === "gelu_tanh") return x.gelu("tanh");
  if (name === "gelu") return x.gelu();
  return (mg as unknown as Record<string, (t: mg.Tensor) => mg.Tensor>)[name](x);
}

Deno.test("unary ops at NaN, ±Inf and 0 give PyTorch's values (exp and log keep NaN, log < 0 is NaN)", async () => {
  await gpu();
  const v = [NaN, Infinity, -Infinity, 0, 1.5, -2, 0.25, -0.75, 3, -0.1];
  const x = f32(v, [2, 5]);
  for (const [name, ref] of Object.entries(UNARY)) {
    const out = gpuUnary(name, x);
    assertClose(await out.data(), v.map(ref.f), SPECIAL, `${name}(${v})`);
    out.dispose();
  }
  x.dispose();
});

Deno.test("relu keeps NaN; its gradient passes at NaN and +Inf, 0 at ≤ 0 (PyTorch)", async () => {
  await gpu();
  const v = [NaN, -1, 2, 0, Infinity, -Infinity, NaN];
  const x = f32(v, [v.length], true);
  const y = x.relu();
  assertClose(await y.data(), v.map(UNARY.relu.f), EXACT, "relu");
  const g = seededValues(v.length, 3, 0.5, 2);
  const up = f32(g, [v.length]);
  y.backward(up);
  assertClose(await x.grad!.data(), v.map((a, i) => g[i] * UNARY.relu.df(a)), EXACT, "relu'");
  for (const t of [x, y, up]) t.dispose();
  x.zeroGrad();
});

for (const op of ["maximum", "minimum"] as const) {
  Deno.test(`${op}: NaN wins on random broadcast shapes, ±Inf compare; gradient as PyTorch (exact)`, async () => {
    await gpu();
    const arb = arbBroadcastPair(3, 5).chain(([sa, sb]) =>
      fc.tuple(
        fc.constant(sa),
        fc.constant(sb),
        arbSpecialValues(size(sa)),
        arbSpecialValues(size(sb)),
      )
    );
    await check(arb, async ([sa, sb, va, vb]) => {
      const before = mg.memory().inUseBytes;
      const a = f32(va, sa, true);
      const b = f32(vb, sb, true);
      const out = mg[op](a, b);
      const ra = nd(va, sa);
      const rb = nd(vb, sb);
      const ref = BINARY[op];
      const g = seededValues(out.size, 5, -1, 1);
      const up = f32(g, out.shape);
      const want = binaryVjp(ref, ra, rb, nd(g, out.shape));
      assertClose(await out.data(), zip([ra, rb], ref.f), EXACT, `${op} ${sa} ${sb}`);
      out.backward(up);
      assertClose(await a.grad!.data(), want[0], GRAD, `${op} da`);
      assertClose(await b.grad!.data(), want[1], GRAD, `${op} db`);
      for (const t of [a, b, out, up]) t.dispose();
      a.zeroGrad();
      b.zeroGrad();
      assertNoLeak(before, op);
    }, 20);
    // A number operand: NaN in the tensor or as the number wins too.
    const x = f32([NaN, -1, 2, Infinity], [4]);
    const withZero = mg[op](x, 0);
    const withNaN = mg[op](x, NaN);
    assertClose(
      await withZero.data(),
      [NaN, -1, 2, Infinity].map((v) => BINARY[op].f(v, 0)),
      EXACT,
      "x op 0",
    );
    assertClose(await withNaN.data(), [NaN, NaN, NaN, NaN], EXACT, "x op NaN");
    for (const t of [x, withZero, withNaN]) t.dispose();
  });
}

Deno.test("pow: pow(NaN, 0) = pow(1, NaN) = 1, any other NaN gives NaN; ±Inf cases (PyTorch)", async () => {
  await gpu();
  const pairs: [number, number][] = [
    [NaN, 0],
    [1, NaN],
    [NaN, 2],
    [2, NaN],
    [0, NaN],
    [NaN, NaN],
    [-NaN, 1],
    [-2, 0.5],
    [Infinity, 2],
    [2, -Infinity],
    [0.5, Infinity],
    [-Infinity, 3],
  ];
  const a = f32(pairs.map((p) => p[0]), [pairs.length]);
  const b = f32(pairs.map((p) => p[1]), [pairs.length]);
  const out = a.pow(b);
  assertClose(await out.data(), pairs.map(([x, y]) => BINARY.pow.f(x, y)), SPECIAL, "pow");
  for (const t of [a, b, out]) t.dispose();
});

const BOUNDS: [number | undefined, number | undefined][] = [
  [-1, 1],
  [undefined, 0.5],
  [-0.5, undefined],
  [1, -1], // min > max: max wins, as in PyTorch
  [-Infinity, Infinity],
];

Deno.test("clamp: NaN stays NaN, ±Inf clamped, gradient only inside [min, max] (PyTorch, exact)", async () => {
  await gpu();
  const arb = arbShape(3, 6).chain((s) =>
    fc.tuple(
      fc.constant(s),
      arbSpecialValues(size(s)),
      fc.constantFrom(...BOUNDS),
      fc.boolean(),
    )
  );
  await check(arb, async ([s, v, [lo, hi], transposed]) => {
    const before = mg.memory().inUseBytes;
    const base = f32(v, s, true);
    const rev = s.map((_, i) => s.length - 1 - i);
    const x = transposed ? base.permute(rev) : base;
    const rx = transposed ? permute(nd(v, s), rev) : nd(v, s);
    const out = mg.clamp(x, lo, hi);
    assertClose(await out.data(), clampRef(rx, lo, hi), EXACT, `clamp ${s} [${lo}, ${hi}]`);
    const g = seededValues(out.size, 7, -1, 1);
    const up = f32(g, out.shape);
    out.backward(up);
    const want = clampVjp(rx, nd(g, out.shape), lo, hi);
    const gx = transposed ? permute(want, rev) : want;
    assertClose(await base.grad!.data(), gx, EXACT, "clamp grad");
    for (const t of new Set([base, x, out, up])) t.dispose();
    base.zeroGrad();
    assertNoLeak(before, "clamp");
  }, 20);
  const xi = mg.tensor([-5, 0, 7], { dtype: "i32" });
  const ci = xi.clamp(-2, 3);
  assertClose(await ci.data(), [-2, 0, 3], EXACT, "i32 clamp");
  assertMgError(() => xi.clamp(0.5), "clamp", "integer");
  assertMgError(() => xi.clamp(), "clamp", "min and max");
  assertMgError(() => f32([1], [1]).clamp(NaN, 1), "clamp", "NaN");
  assertMgError(() => mg.tensor([true]).clamp(0, 1), "clamp", "bool");
  for (const t of [xi, ci]) t.dispose();
});
