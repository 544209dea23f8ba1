/**
 * Elementwise ops against float64 references: unary math, broadcasting binary ops with
 * tensor or number operands, comparisons, where, cast, contiguous; forward and backward,
 * on random shapes (rank 0 and size-1 axes included) and on strided views (transposed,
 * sliced with an offset and a step, expanded with stride 0) as inputs. Every backward is
 * checked twice: GPU gradient vs the reference vjp, and the reference vjp vs central
 * finite differences in float64. Every property also checks that GPU memory in use
 * returns to where it started once the test disposes what it made.
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
  assertTensorClose,
  check,
  f32,
  fc,
  gpu,
  type Tolerance,
} from "./util.ts";
import { dot, map, nd, type NDArray, numericGrad, size, zip } from "./reference/ndarray.ts";
import {
  awayFromKinks,
  BINARY,
  binaryVjp,
  COMPARE,
  UNARY,
  unaryVjp,
  viewCase,
  viewForward,
  type ViewKind,
  viewVjp,
  whereRef,
  whereVjp,
} from "./reference/elementwise.ts";

// ---- helpers ------------------------------------------------------------------------------

const KINDS: ViewKind[] = ["plain", "transposed", "sliced", "expanded"];

/** A view case with logical rank 0..4, sizes 1..5. */
const arbCase = fc.tuple(arbShape(4, 5), fc.constantFrom(...KINDS), fc.nat(7)).map((
  [s, k, a],
) => viewCase(k, s, a));

/** Values for the finite-difference checks: step h = 1e-5 in float64. */
const H = 1e-5;
/**
 * Tolerance of a float64 reference vjp against central differences: truncation h²·f'''/6
 * is < 1e-8 on the tested domains; rounding eps·|Σ f·g|/h is < 2e-6 for ≤ 625 elements of
 * magnitude ≤ 110.
 */
const FD_TOL: Tolerance = { rtol: 1e-5, atol: 1e-5 };

// ---- unary --------------------------------------------------------------------------------

/**
 * GPU vs float64, f32 inputs. Each op's tolerance: rounding of the f32 result is 6e-8
 * relative; the WGSL builtins on llvmpipe add a few ulp (exp, log, sin, cos, sqrt are each
 * within ~4 ulp measured), so 1e-6 relative + 1e-6 absolute covers the forward. Composite
 * ops (tanh, sigmoid, silu, gelu via exp and a 1.5e-7-accurate erf) get 1e-6 absolute and
 * 1e-5 relative; their backward multiplies by an upstream of magnitude ≤ 2, so the
 * gradient tolerances are doubled.
 */
const UNARY_TOL: Record<string, Tolerance> = {
  neg: { rtol: 0, atol: 0 },
  abs: { rtol: 0, atol: 0 },
  square: { rtol: 1e-7, atol: 1e-37 }, // products below 1e-37 may flush to zero
  relu: { rtol: 0, atol: 0 },
  exp: { rtol: 1e-6, atol: 1e-6 },
  log: { rtol: 1e-6, atol: 1e-6 },
  sqrt: { rtol: 1e-6, atol: 1e-6 },
  rsqrt: { rtol: 1e-6, atol: 1e-6 },
  sin: { rtol: 1e-6, atol: 2e-6 },
  cos: { rtol: 1e-6, atol: 2e-6 },
  tanh: { rtol: 1e-5, atol: 1e-6 },
  sigmoid: { rtol: 1e-5, atol: 1e-6 },
  silu: { rtol: 1e-5, atol: 2e-6 },
  gelu: { rtol: 1e-5, atol: 2e-6 },
  gelu_tanh: { rtol: 1e-5, atol: 2e-6 },
};

function gpuUnary(name: string, x: mg.Tensor): mg.Tensor {
  if (name === "gelu_tanh") return x.gelu("tanh");
  if (name === "gelu") return x.gelu();
  return (mg as unknown as Record<string, (t: mg.Tensor) => mg.Tensor>)[name](x);
}

for (const [name, ref] of Object.entries(UNARY)) {
  const tol = UNARY_TOL[name];
  const gtol = { rtol: 2 * tol.rtol + 1e-7, atol: 2 * tol.atol + 1e-7 };
  Deno.test(
    `${name}: forward (rtol ${tol.rtol}, atol ${tol.atol}) and backward vs float64, on views`,
    async () => {
      await gpu();
      const [lo, hi] = ref.domain;
      await check(
        arbCase.chain((c) =>
          fc.tuple(
            fc.constant(c),
            arbValues(size(c.baseShape), lo, hi),
            arbValues(size(c.shape), -2, 2),
          )
        ),
        async ([c, bv, uv]) => {
          const before = mg.memory().inUseBytes;
          const base = f32(bv, c.baseShape, true);
          const x = applyView(c, base);
          const out = gpuUnary(name, x);
          const up = f32(uv, c.shape);
          const xr = viewForward(c, nd(bv, c.baseShape));
          const upr = nd(uv, c.shape);
          await assertTensorClose(out, map(xr, ref.f), tol, `${name} ${c.kind} [${c.shape}]`);
          out.backward(up);
          const want = viewVjp(c, unaryVjp(ref, xr, upr));
          await assertTensorClose(base.grad!, want, gtol, `${name}' ${c.kind} [${c.shape}]`);
          // The reference vjp itself, against finite differences away from kinks.
          const xk = awayFromKinks(xr, ref.kinks);
          const fd = numericGrad((v) => dot(map(v, ref.f), upr), xk, H);
          assertClose(unaryVjp(ref, xk, upr).data, fd.data, FD_TOL, `${name} ref vjp vs fd`);
          for (const t of [base, x, out, up]) t.dispose();
          base.zeroGrad();
          assertNoLeak(before, name);
        },
        8,
      );
    },
  );
}

Deno.test("every unary op on a dense grid of 4001 points over its domain, value and gradient", async () => {
  // Random shapes draw few distinct values; this sweeps each domain evenly (same tolerances).
  await gpu();
  for (const [name, ref] of Object.entries(UNARY)) {
    const [lo, hi] = ref.domain;
    const v = Float32Array.from({ length: 4001 }, (_, i) => lo + ((hi - lo) * i) / 4000);
    const x = mg.tensor(v, { requiresGrad: true });
    const out = gpuUnary(name, x);
    out.backward(mg.onesLike(out));
    const tol = UNARY_TOL[name];
    const xr = nd(v, [v.length]);
    assertClose(await out.data(), map(xr, ref.f), tol, `${name} grid`);
    assertClose(await x.grad!.data(), map(xr, ref.df), {
      rtol: 2 * tol.rtol + 1e-7,
      atol: 2 * tol.atol + 1e-7,
    }, `${name}' grid`);
    x.dispose();
    out.dispose();
    x.zeroGrad();
  }
});

Deno.test("integer unary ops (neg, abs, relu, square) on i32 are exact", async () => {
  await gpu();
  await check(
    fc.tuple(arbShape(3, 5), fc.nat()).chain(([s]) =>
      fc.tuple(
        fc.constant(s),
        fc.array(fc.integer({ min: -1000, max: 1000 }), {
          minLength: size(s),
          maxLength: size(s),
        }),
      )
    ),
    async ([s, v]) => {
      const x = mg.tensor(Int32Array.from(v), { shape: s });
      const refs: Record<string, (a: number) => number> = {
        neg: (a) => -a,
        abs: Math.abs,
        relu: (a) => Math.max(a, 0),
        square: (a) => a * a,
      };
      for (const [name, f] of Object.entries(refs)) {
        const out = gpuUnary(name, x);
        assert.equal(out.dtype, "i32");
        assert.deepEqual(out.shape, s);
        assert.deepEqual(Array.from(await out.data()), v.map((a) => f(a) + 0), name);
        out.dispose();
      }
      x.dispose();
    },
    10,
  );
});

Deno.test("float-only unary ops reject i32 and bool with MoongradError naming the op", async () => {
  await gpu();
  const xi = mg.tensor([1, 2], { dtype: "i32" });
  const xb = mg.tensor([true, false]);
  for (const name of ["exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "silu"]) {
    assertMgError(() => gpuUnary(name, xi), name, "i32");
  }
  assertMgError(() => xi.gelu(), "gelu", "i32");
  assertMgError(() => xi.gelu("tanh"), "gelu_tanh", "i32");
  for (const name of ["neg", "abs", "relu", "square", "exp"]) {
    assertMgError(() => gpuUnary(name, xb), name, "bool");
  }
  assertMgError(() => xi.requiresGrad_(), "requiresGrad_", "i32");
  xi.dispose();
  xb.dispose();
});

// ---- NaN / Inf ------------------------------------------------------------------------------

/** f32 values from raw bit patterns (the WGSL compiler cannot fold these away). */
function bits(...words: number[]): Float32Array {
  return new Float32Array(new Uint32Array(words).buffer);
}
const POS_INF = 0x7f800000;
const NEG_INF = 0xff800000;
const QNAN = 0x7fc00000;

Deno.test("special values from bit patterns: exp, log, sigmoid, tanh, sqrt, NaN propagation", async () => {
  await gpu();
  const x = mg.tensor(bits(NEG_INF, POS_INF, 0, QNAN));
  const big = mg.tensor([1e4, -1e4, 88.8, -104, 1e-30]);
  const cases: [mg.Tensor, number[]][] = [
    [x.exp(), [0, Infinity, 1, NaN]],
    [x.log(), [NaN, Infinity, -Infinity, NaN]],
    [x.sqrt(), [NaN, Infinity, 0, NaN]],
    [x.sigmoid(), [0, 1, 0.5, NaN]],
    [x.tanh(), [-1, 1, 0, NaN]],
    [x.add(1), [-Infinity, Infinity, 1, NaN]],
    [x.mul(2), [-Infinity, Infinity, 0, NaN]],
  ];
  for (const [t, want] of cases) {
    const got = Array.from(await t.data());
    // log(−inf) is NaN as in PyTorch (WGSL's log is indeterminate below 0: mg_log decides).
    for (let i = 0; i < want.length; i++) {
      if (Number.isNaN(want[i])) assert.ok(Number.isNaN(got[i]), `NaN at ${i}: ${got}`);
      else assert.equal(got[i], want[i], `index ${i}: ${got}`);
    }
    t.dispose();
  }
  // Large finite inputs stay finite and saturate correctly (no inf/inf or exp overflow).
  const sig = Array.from(await big.sigmoid().data());
  assertClose(sig, [1, 0, 1, 0, 0.5], { rtol: 1e-6, atol: 1e-30 }, "sigmoid saturates");
  const th = Array.from(await big.tanh().data());
  assertClose(th, [1, -1, 1, -1, 1e-30], { rtol: 1e-6, atol: 0 }, "tanh saturates, tiny exact");
  for (const name of ["silu", "gelu", "gelu_tanh"]) {
    const got = Array.from(await gpuUnary(name, big).data());
    assert.ok(got.every(Number.isFinite), `${name} finite: ${got}`);
    assertClose(got.slice(0, 2), [1e4, 0], { rtol: 1e-6, atol: 1e-30 }, name);
  }
  // Gradients of saturated sigmoid/tanh are finite zeros, not NaN.
  const xg = mg.tensor([1e4, -1e4], { requiresGrad: true });
  const y = xg.sigmoid().add(xg.tanh()).sum();
  y.backward();
  assert.deepEqual(Array.from(await xg.grad!.data()), [0, 0]);
  for (const t of [x, big, xg, y]) t.dispose();
});

Deno.test("tanh keeps relative accuracy near zero (rtol 1e-6 down to 1e-30)", async () => {
  await gpu();
  const v = [1e-30, -1e-20, 1e-10, -1e-7, 3e-5, -1e-3, 0.05, -0.12, 0.13, 0.3];
  const x = mg.tensor(v);
  const out = x.tanh();
  assertClose(await out.data(), v.map((a) => Math.tanh(Math.fround(a))), {
    rtol: 1e-6,
    atol: 0,
  }, "tanh small");
  x.dispose();
  out.dispose();
});

// ---- binary -------------------------------------------------------------------------------

/** Input values per op: divisors kept away from 0, pow bases positive, ties for max/min. */
function shapeValues(op: string, side: "a" | "b", v: number[]): number[] {
  if (op === "div" && side === "b") {
    return v.map((x) => Math.fround(Math.sign(x || 1) * (0.25 + Math.abs(x))));
  }
  if (op === "pow" && side === "a") return v.map((x) => Math.fround(0.1 + Math.abs(x)));
  if (op === "maximum" || op === "minimum") return v.map((x) => Math.round(x * 2) / 2);
  return v;
}

/**
 * GPU vs float64 for add/sub/mul/div/max/min: one f32 rounding (6e-8 relative); the
 * gradients sum at most 5⁴ broadcast terms of magnitude ≤ 6·2 in f32, so atol 1e-4 + rtol
 * 1e-5. pow goes through exp2(b·log2 a): relative error ≈ |b·log a|·2⁻²³ ≤ 1e-6 here,
 * so rtol 1e-5.
 */
const BIN_TOL: Tolerance = { rtol: 1e-5, atol: 1e-6 };
const BIN_GRAD_TOL: Tolerance = { rtol: 1e-5, atol: 1e-4 };

const arbPairCase = fc.tuple(arbBroadcastPair(4, 5), fc.constantFrom(...KINDS), fc.nat(7))
  .chain(([[sa, sb], kind, ax]) => {
    const c = viewCase(kind, sa, ax);
    return fc.tuple(
      fc.constant(c),
      fc.constant(sb),
      arbValues(size(c.baseShape)),
      arbValues(size(sb)),
      fc.integer({ min: 0, max: 2 }), // 0: tensor ⊕ tensor, 1: tensor ⊕ number, 2: number ⊕ tensor
      fc.double({ min: -3, max: 3, noNaN: true }),
    );
  });

for (const [name, ref] of Object.entries(BINARY)) {
  Deno.test(
    `${name}: broadcasting forward and backward vs float64, tensor/number on either side (rtol 1e-5)`,
    async () => {
      await gpu();
      await check(arbPairCase, async ([c, sb, av0, bv0, mode, s0]) => {
        const before = mg.memory().inUseBytes;
        const av = shapeValues(name, "a", av0);
        const bv = shapeValues(name, "b", bv0);
        const s = shapeValues(name, mode === 1 ? "b" : "a", [Math.fround(s0) || 0.5])[0];
        const base = f32(av, c.baseShape, true);
        const a = applyView(c, base);
        const b = f32(bv, sb, true);
        const ar = viewForward(c, nd(av, c.baseShape));
        const br = nd(bv, sb);
        const sr = nd([s], []);
        const fn = (mg as unknown as Record<string, (x: mg.Operand, y: mg.Operand) => mg.Tensor>)[
          name
        ];
        // mode 0: a ⊕ b; mode 1: a ⊕ s; mode 2: s ⊕ b
        const out = mode === 0 ? fn(a, b) : mode === 1 ? fn(a, s) : fn(s, b);
        const [lr, rr] = mode === 0 ? [ar, br] : mode === 1 ? [ar, sr] : [sr, br];
        const fwd = zip([lr, rr], ref.f);
        const what = `${name} mode ${mode} ${c.kind} [${c.shape}] [${sb}]`;
        await assertTensorClose(out, fwd, BIN_TOL, what);
        const uv = Array.from({ length: fwd.size }, (_, i) => Math.fround(Math.sin(i + 1) * 1.5));
        const up = f32(uv, fwd.shape);
        const upr = nd(uv, fwd.shape);
        out.backward(up);
        const [gl, gr] = binaryVjp(ref, lr, rr, upr);
        if (mode !== 2) {
          await assertTensorClose(base.grad!, viewVjp(c, gl), BIN_GRAD_TOL, what + " da");
        } else assert.equal(base.grad, null);
        if (mode !== 1) await assertTensorClose(b.grad!, gr, BIN_GRAD_TOL, what + " db");
        else assert.equal(b.grad, null);
        // Reference vjp vs finite differences (ties of max/min give 0.5 both ways).
        if (mode === 0) {
          const fa = numericGrad((v) => dot(zip([v, br], ref.f), upr), ar, H);
          const fb = numericGrad((v) => dot(zip([ar, v], ref.f), upr), br, H);
          assertClose(gl.data, fa.data, FD_TOL, `${name} ref vjp a vs fd`);
          assertClose(gr.data, fb.data, FD_TOL, `${name} ref vjp b vs fd`);
        }
        for (const t of [base, a, b, out, up]) t.dispose();
        base.zeroGrad();
        b.zeroGrad();
        assertNoLeak(before, what);
      }, 12);
    },
  );
}

Deno.test("pow: negative bases with integer exponents, 0 and special cases (rtol 1e-5)", async () => {
  await gpu();
  const a = [-2, -2, -1.5, -3, -0.5, 0, 0, 0, 2, -2];
  const b = [3, 2, 4, -1, -3, 2, 0, 1, 0.5, 0];
  const x = mg.tensor(a, { requiresGrad: true });
  const y = mg.tensor(b, { requiresGrad: true });
  const out = x.pow(y);
  const want = a.map((v, i) => v ** b[i]);
  assertClose(await out.data(), want, { rtol: 1e-5, atol: 1e-6 }, "pow values");
  out.backward(mg.onesLike(out));
  // d/da = b·a^(b−1) (0 when b = 0, as in PyTorch); d/db = a^b·ln a for a > 0, else 0.
  const da = a.map((v, i) => (b[i] === 0 ? 0 : b[i] * v ** (b[i] - 1)));
  const db = a.map((v, i) => (v > 0 ? v ** b[i] * Math.log(v) : 0));
  assertClose(await x.grad!.data(), da, { rtol: 1e-5, atol: 1e-6 }, "pow da");
  assertClose(await y.grad!.data(), db, { rtol: 1e-5, atol: 1e-6 }, "pow db");
  // A negative base with a fractional exponent is NaN.
  const n = mg.tensor([-2]).pow(0.5);
  assert.ok(Number.isNaN((await n.data())[0]));
  for (const t of [x, y, out, n]) t.dispose();
});

Deno.test("i32 arithmetic (add, sub, mul, div truncating, maximum, minimum) is exact", async () => {
  await gpu();
  await check(
    arbBroadcastPair(3, 5).chain(([sa, sb]) =>
      fc.tuple(
        fc.constant(sa),
        fc.constant(sb),
        fc.array(fc.integer({ min: -500, max: 500 }), { minLength: size(sa), maxLength: size(sa) }),
        fc.array(fc.integer({ min: -40, max: 40 }).filter((v) => v !== 0), {
          minLength: size(sb),
          maxLength: size(sb),
        }),
      )
    ),
    async ([sa, sb, av, bv]) => {
      const a = mg.tensor(Int32Array.from(av), { shape: sa });
      const b = mg.tensor(Int32Array.from(bv), { shape: sb });
      const refs: Record<string, (x: number, y: number) => number> = {
        add: (x, y) => x + y,
        sub: (x, y) => x - y,
        mul: (x, y) => x * y,
        div: (x, y) => Math.trunc(x / y),
        maximum: Math.max,
        minimum: Math.min,
      };
      for (const [name, f] of Object.entries(refs)) {
        const fn = (mg as unknown as Record<string, (x: mg.Operand, y: mg.Operand) => mg.Tensor>)[
          name
        ];
        for (
          const [out, want] of [
            [fn(a, b), zip([nd(av, sa), nd(bv, sb)], f)],
            [fn(a, 7), zip([nd(av, sa), nd([7], [])], f)],
            [fn(-9, b), zip([nd([-9], []), nd(bv, sb)], f)],
          ] as const
        ) {
          assert.equal(out.dtype, "i32");
          assert.deepEqual(out.shape, want.shape, name);
          assert.deepEqual(Array.from(await out.data()), Array.from(want.data, (v) => v + 0), name);
          out.dispose();
        }
      }
      a.dispose();
      b.dispose();
    },
    8,
  );
});

Deno.test("binary ops reject mismatched dtypes, bad broadcasts and float-only dtypes by name", async () => {
  await gpu();
  const a = mg.zeros([2, 3]);
  const i = mg.zeros([3], { dtype: "i32" });
  const c = mg.zeros([4]);
  const bl = mg.tensor([true, false, true]);
  for (const op of ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "lt", "eq"]) {
    const fn = (mg as unknown as Record<string, (x: mg.Operand, y: mg.Operand) => mg.Tensor>)[op];
    assertMgError(() => fn(a, i), op, "f32", "i32", "[2, 3]", "[3]");
    assertMgError(() => fn(a, c), op, "[2, 3]", "[4]");
    assertMgError(() => fn(2, 3), op, "Tensor");
  }
  assertMgError(() => i.pow(i), "pow", "i32");
  assertMgError(() => bl.add(bl), "add", "bool");
  assertMgError(() => bl.lt(bl), "lt", "bool");
  assertMgError(() => mg.add(a, "x" as unknown as mg.Tensor), "add", "Tensor");
  for (const t of [a, i, c, bl]) t.dispose();
});

// ---- comparisons ----------------------------------------------------------------------------

Deno.test("comparisons give bool tensors whose data() is a Uint8Array of 0/1", async () => {
  await gpu();
  await check(
    arbBroadcastPair(4, 5).chain(([sa, sb]) =>
      fc.tuple(
        fc.constant(sa),
        fc.constant(sb),
        // A coarse grid makes ties (eq, le, ge boundaries) frequent.
        fc.array(fc.integer({ min: -2, max: 2 }), { minLength: size(sa), maxLength: size(sa) }),
        fc.array(fc.integer({ min: -2, max: 2 }), { minLength: size(sb), maxLength: size(sb) }),
        fc.constantFrom<mg.DType>("f32", "i32"),
      )
    ),
    async ([sa, sb, av, bv, dtype]) => {
      const scale = dtype === "f32" ? 0.5 : 1;
      const avs = av.map((v) => v * scale);
      const bvs = bv.map((v) => v * scale);
      const a = mg.tensor(avs, { shape: sa, dtype });
      const b = mg.tensor(bvs, { shape: sb, dtype });
      for (const [name, f] of Object.entries(COMPARE)) {
        const fn = (mg as unknown as Record<string, (x: mg.Operand, y: mg.Operand) => mg.Tensor>)[
          name
        ];
        const cases: [mg.Tensor, NDArray][] = [
          [fn(a, b), zip([nd(avs, sa), nd(bvs, sb)], (x, y) => +f(x, y))],
          [fn(a, scale), zip([nd(avs, sa)], (x) => +f(x, scale))],
          [fn(-scale, b), zip([nd(bvs, sb)], (y) => +f(-scale, y))],
        ];
        for (const [out, want] of cases) {
          assert.equal(out.dtype, "bool");
          assert.deepEqual(out.shape, want.shape);
          const d = await out.data();
          assert.ok(d instanceof Uint8Array, `${name}: data() is a Uint8Array`);
          assert.deepEqual(Array.from(d), Array.from(want.data), `${name} ${dtype}`);
          out.dispose();
        }
      }
      a.dispose();
      b.dispose();
    },
    10,
  );
});

Deno.test("eq/ne on bool tensors; comparisons do not record gradients", async () => {
  await gpu();
  const a = mg.tensor([true, false, true, false]);
  const b = mg.tensor([true, true, false, false]);
  assert.deepEqual(Array.from(await a.eq(b).data()), [1, 0, 0, 1]);
  assert.deepEqual(Array.from(await a.ne(b).data()), [0, 1, 1, 0]);
  const x = mg.tensor([1, 2, 3], { requiresGrad: true });
  const m = x.gt(1.5);
  assert.equal(m.requiresGrad, false);
  assert.equal(m.gradFn, null);
  for (const t of [a, b, x, m]) t.dispose();
});

// ---- where, cast, contiguous ----------------------------------------------------------------

/** Three shapes broadcasting to one: axes set to 1 or leading axes dropped at random. */
const arbTriple = fc.tuple(
  arbShape(4, 4),
  fc.array(fc.nat(3), { minLength: 12, maxLength: 12 }),
  fc.array(fc.nat(4), { minLength: 3, maxLength: 3 }),
).map(([s, modes, drops]) =>
  [0, 1, 2].map((k) => {
    const t = s.map((d, i) => (modes[k * 4 + i] === 0 ? 1 : d));
    return t.slice(Math.min(drops[k], t.length));
  })
);

Deno.test("where broadcasts cond, a and b; gradients route by cond (exact)", async () => {
  await gpu();
  await check(
    arbTriple.chain(([sc, sa, sb]) =>
      fc.tuple(
        fc.constant([sc, sa, sb]),
        fc.array(fc.boolean(), { minLength: size(sc), maxLength: size(sc) }),
        arbValues(size(sa)),
        arbValues(size(sb)),
        fc.integer({ min: 0, max: 2 }),
      )
    ),
    async ([[sc, sa, sb], cv, av, bv, mode]) => {
      const before = mg.memory().inUseBytes;
      const cond = mg.tensor(Uint8Array.from(cv, Number), { shape: sc });
      const a = f32(av, sa, true);
      const b = f32(bv, sb, true);
      const cr = nd(cv.map(Number), sc);
      const ar = mode === 2 ? nd([-4], []) : nd(av, sa);
      const br = mode === 1 ? nd([2.5], []) : nd(bv, sb);
      const out = mode === 0 ? mg.where(cond, a, b) : mode === 1 ? mg.where(cond, a, 2.5) : mg
        .where(cond, -4, b);
      const want = whereRef(cr, ar, br);
      await assertTensorClose(out, want, { rtol: 0, atol: 0 }, `where ${sc} ${sa} ${sb}`);
      const uv = Array.from({ length: want.size }, (_, i) => Math.fround(Math.cos(i) + 0.1));
      const up = f32(uv, want.shape);
      out.backward(up);
      const [ga, gb] = whereVjp(cr, ar, br, nd(uv, want.shape));
      // Gradients are sums of at most 4⁴ upstream values: atol 1e-5.
      const tol = { rtol: 1e-6, atol: 1e-5 };
      if (mode !== 2) await assertTensorClose(a.grad!, ga, tol, "where da");
      if (mode !== 1) await assertTensorClose(b.grad!, gb, tol, "where db");
      if (mode === 0) {
        const fa = numericGrad((v) => dot(whereRef(cr, v, br), nd(uv, want.shape)), ar, H);
        assertClose(ga.data, fa.data, FD_TOL, "where ref vjp vs fd");
      }
      for (const t of [cond, a, b, out, up]) t.dispose();
      a.zeroGrad();
      b.zeroGrad();
      assertNoLeak(before, "where");
    },
    12,
  );
});

Deno.test("where rejects a non-bool cond naming its dtype and shape", async () => {
  await gpu();
  const c = mg.tensor([1, 0]);
  const a = mg.tensor([1, 2]);
  assertMgError(() => mg.where(c, a, a), "where", "f32", "[2]");
  assertMgError(() => mg.where(c.gt(0), a, mg.zeros([3])), "where", "[2]", "[3]");
  c.dispose();
  a.dispose();
});

Deno.test("cast between f32, i32 and bool: truncation toward zero, x != 0 for bool", async () => {
  await gpu();
  const v = [-2.75, -1, -0.5, -0, 0, 0.5, 0.999, 1, 2.5, 1e6 + 0.5, -123456.7];
  const x = mg.tensor(v, { requiresGrad: true });
  const xi = x.cast("i32");
  assert.equal(xi.dtype, "i32");
  assert.deepEqual(Array.from(await xi.data()), v.map((a) => Math.trunc(Math.fround(a)) + 0));
  const xb = x.cast("bool");
  assert.equal(xb.dtype, "bool");
  assert.deepEqual(Array.from(await xb.data()), v.map((a) => (a !== 0 ? 1 : 0)));
  const back = xi.cast("f32");
  assert.deepEqual(Array.from(await back.data()), v.map((a) => Math.trunc(Math.fround(a)) + 0));
  const bi = xb.cast("i32");
  const bf = xb.cast("f32");
  const ib = mg.tensor([0, -3, 7], { dtype: "i32" }).cast("bool");
  assert.deepEqual(Array.from(await bi.data()), v.map((a) => (a !== 0 ? 1 : 0)));
  assert.deepEqual(Array.from(await bf.data()), v.map((a) => (a !== 0 ? 1 : 0)));
  assert.deepEqual(Array.from(await ib.data()), [0, 1, 1]);
  assert.equal(xi.requiresGrad, false, "integer results carry no graph");
  // f32 → f32 cast passes the gradient through unchanged.
  const same = x.cast("f32");
  same.backward(mg.tensor(v.map((_, i) => i)));
  assert.deepEqual(Array.from(await x.grad!.data()), v.map((_, i) => i));
  assertMgError(() => x.cast("f64" as mg.DType), "cast", "f64");
  for (const t of [x, xi, xb, back, bi, bf, ib, same]) t.dispose();
});

Deno.test("contiguous copies strided views exactly; its backward returns the view gradient", async () => {
  await gpu();
  await check(
    arbCase.chain((c) => fc.tuple(fc.constant(c), arbValues(size(c.baseShape)))),
    async ([c, bv]) => {
      const before = mg.memory().inUseBytes;
      const base = f32(bv, c.baseShape, true);
      const v = applyView(c, base);
      const out = v.contiguous();
      assert.ok(out.isContiguous);
      assert.deepEqual(out.strides, [...c.shape.keys()].map((i) => size(c.shape.slice(i + 1))));
      const want = viewForward(c, nd(bv, c.baseShape));
      await assertTensorClose(out, want, { rtol: 0, atol: 0 }, `contiguous ${c.kind}`);
      // data() of the strided view itself reads the same values.
      assertClose(await v.data(), want, { rtol: 0, atol: 0 }, "view data()");
      const uv = Array.from({ length: want.size }, (_, i) => i % 7 - 3);
      const up = f32(uv, c.shape);
      out.backward(up);
      await assertTensorClose(base.grad!, viewVjp(c, nd(uv, c.shape)), {
        rtol: 0,
        atol: 1e-6,
      }, "contiguous grad");
      for (const t of [base, v, out, up]) t.dispose();
      base.zeroGrad();
      assertNoLeak(before, "contiguous");
    },
    15,
  );
});

Deno.test("(out * upstream).sum().backward() matches out.backward(upstream) (silu on a view)", async () => {
  await gpu();
  const base = mg.tensor(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i) * 2), {
    shape: [4, 6],
    requiresGrad: true,
  });
  const up = mg.tensor(Float32Array.from({ length: 24 }, (_, i) => Math.cos(i)), { shape: [6, 4] });
  const y = base.transpose().silu();
  const loss = y.mul(up).sum();
  loss.backward();
  const g1 = await base.grad!.data();
  base.zeroGrad();
  const y2 = base.transpose().silu();
  y2.backward(up);
  assertClose(g1, await base.grad!.data(), { rtol: 1e-6, atol: 1e-7 }, "two routes");
  for (const t of [base, up, y, loss, y2]) t.dispose();
  base.zeroGrad();
});

Deno.test("f16 elementwise: add and exp in f16 storage (rtol 2e-3)", async () => {
  const info = await gpu();
  if (!info.f16) return; // shader-f16 is optional: nothing to test on this adapter.
  const v = [0.5, -1.25, 2, 3.140625, -0.0999755859375, 1000];
  const x = mg.tensor(v, { dtype: "f16", requiresGrad: true });
  const y = x.exp().add(x);
  assert.equal(y.dtype, "f16");
  // f16 has an 11-bit significand: results are rounded to 2⁻¹¹ relative (4.9e-4); exp adds
  // one more rounding of its input; 2e-3 covers both. exp(1000) overflows f16 to +inf.
  assertClose(await y.data(), v.map((a) => Math.exp(a) + a), { rtol: 2e-3, atol: 1e-3 }, "f16");
  y.backward(mg.onesLike(y));
  assert.equal(x.grad!.dtype, "f16");
  const g = await x.grad!.data();
  assertClose(g.slice(0, 5), v.slice(0, 5).map((a) => Math.exp(a) + 1), {
    rtol: 2e-3,
    atol: 1e-3,
  }, "f16 grad");
  x.dispose();
  y.dispose();
});

Deno.test("backward still works after intermediates (inputs and outputs of saved ops) are disposed", async () => {
  await gpu();
  const before = mg.memory().inUseBytes;
  const x = mg.tensor([0.5, -1, 2], { requiresGrad: true });
  const w = mg.tensor([1.5, 2, -0.5], { requiresGrad: true });
  const loss = mg.scope(() => {
    const h = x.exp(); // saves its output
    const p = h.mul(w); // saves both inputs
    const q = p.div(x.add(3)).pow(2).maximum(0.1).max(); // div/pow/maximum/max save handles
    return q.add(x.var());
  }); // every intermediate handle is disposed here; the graph keeps what backward needs
  loss.backward();
  // Same computation in float64: f = max(max((e^x·w/(x+3))², 0.1)) + var(x).
  const xv = [0.5, -1, 2];
  const wv = [1.5, 2, -0.5];
  const r = xv.map((v, i) => ((Math.exp(v) * wv[i]) / (v + 3)) ** 2);
  const k = r.indexOf(Math.max(...r));
  const m = (xv[0] + xv[1] + xv[2]) / 3;
  const t = (Math.exp(xv[k]) * wv[k]) / (xv[k] + 3);
  const gx = xv.map((v, i) => (2 * (v - m)) / 2 + (i === k ? 2 * t * (t - t / (v + 3)) : 0));
  const gw = wv.map((_, i) => (i === k ? (2 * t * Math.exp(xv[k])) / (xv[k] + 3) : 0));
  assertClose(await x.grad!.data(), gx, { rtol: 1e-5, atol: 1e-6 }, "x grad");
  assertClose(await w.grad!.data(), gw, { rtol: 1e-5, atol: 1e-6 }, "w grad");
  for (const v of [x, w, loss]) v.dispose();
  x.zeroGrad();
  w.zeroGrad();
  assertNoLeak(before, "scope + backward");
});
