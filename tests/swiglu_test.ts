/**
 * The fused SwiGLU op (ops/swiglu.ts): forward vs a float64 reference, backward vs the
 * reference vjp, the reference vjp vs central finite differences, strided views, one dispatch
 * each way, and its errors. Tolerances: silu through mg_exp is ~1e-7 relative, so 1e-5
 * relative + 1e-6 absolute (as elementwise_test.ts gives silu).
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import {
  arbShape,
  arbValues,
  assertClose,
  assertMgError,
  check,
  countDispatches,
  fc,
  gpu,
} from "./util.ts";

const sig = (x: number) => 1 / (1 + Math.exp(-x));
const ref = (a: number, b: number) => a * sig(a) * b;
/** Analytic vjp in float64. */
const vjp = (g: number, a: number, b: number): [number, number] => {
  const s = sig(a);
  return [g * b * s * (1 + a * (1 - s)), g * a * s];
};
const TOL = { rtol: 1e-5, atol: 1e-6 };

Deno.test("swiglu forward and both gradients match float64 references on random shapes", async () => {
  await gpu();
  await check(
    arbShape(4, 6).chain((s) => {
      const n = s.reduce((a, b) => a * b, 1);
      return fc.tuple(fc.constant(s), arbValues(n, -6, 6), arbValues(n), arbValues(n));
    }),
    async ([shape, av, bv, gv]) => {
      const a = mg.tensor(Float32Array.from(av), { shape, requiresGrad: true });
      const b = mg.tensor(Float32Array.from(bv), { shape, requiresGrad: true });
      const g = mg.tensor(Float32Array.from(gv), { shape });
      const y = mg.swiglu(a, b);
      const A = Float32Array.from(av), B = Float32Array.from(bv), G = Float32Array.from(gv);
      assertClose(await y.data(), [...A].map((x, i) => ref(x, B[i])), TOL, "forward");
      y.backward(g);
      const want = [...A].map((x, i) => vjp(G[i], x, B[i]));
      assertClose(await a.grad!.data(), want.map((w) => w[0]), TOL, "da");
      assertClose(await b.grad!.data(), want.map((w) => w[1]), TOL, "db");
      for (const t of [a, b, g, y]) t.dispose();
    },
    15,
  );
});

Deno.test("the swiglu reference vjp matches central finite differences in float64", () => {
  const h = 1e-6;
  for (const [a, b, g] of [[0.3, -1.2, 0.7], [-4, 2, 1.5], [2.5, 0.1, -1], [0, 3, 2]]) {
    const [da, db] = vjp(g, a, b);
    const fa = g * (ref(a + h, b) - ref(a - h, b)) / (2 * h);
    const fb = g * (ref(a, b + h) - ref(a, b - h)) / (2 * h);
    assertClose([da, db], [fa, fb], { rtol: 1e-7, atol: 1e-9 }, `fd at ${a}, ${b}`);
  }
});

Deno.test("swiglu reads strided views, matches silu(a)·b, and takes one dispatch each way", async () => {
  await gpu();
  const base = mg.randn([6, 10], { seed: 3, requiresGrad: true });
  const a = base.slice(1, 0, 5), b = base.transpose().slice(0, 5, 10).transpose();
  let y!: mg.Tensor;
  const fwd = countDispatches(() => (y = mg.swiglu(a, b)));
  assert.deepEqual([...fwd], [["swiglu", 1]]);
  const plain = mg.noGrad(() => a.silu().mul(b));
  assertClose(await y.data(), await plain.data(), TOL, "vs silu·mul");
  const g = mg.randn([6, 5], { seed: 4 });
  const bwd = countDispatches(() => y.backward(g));
  assert.equal(bwd.get("swiglu_grad"), 1);
  // Reference: the unfused graph's gradient of the same base.
  const base2 = mg.tensor(await base.data(), { shape: [6, 10], requiresGrad: true });
  base2.slice(1, 0, 5).silu().mul(base2.slice(1, 5, 10)).backward(g);
  assertClose(await base.grad!.data(), await base2.grad!.data(), TOL, "grad of base");
  for (const t of [base, base2, a, b, y, g, plain]) t.dispose();
});

Deno.test("swiglu rejects mismatched shapes, dtypes and non-float inputs", async () => {
  await gpu();
  const a = mg.zeros([2, 3]), b = mg.zeros([3, 2]), i = mg.zeros([2, 3], { dtype: "i32" });
  assertMgError(() => mg.swiglu(a, b), "swiglu", "[2, 3]", "[3, 2]");
  assertMgError(() => mg.swiglu(i, i), "swiglu", "i32");
  assertMgError(() => mg.swiglu(a, 1 as unknown as mg.Tensor), "swiglu", "b must be a Tensor");
  for (const t of [a, b, i]) t.dispose();
});
