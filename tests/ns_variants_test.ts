/**
 * Newton–Schulz variants: the Polar Express schedule (optim/polar_express.ts) and Gram
 * Newton–Schulz (`method: "gram"` in optim/newton_schulz.ts).
 *
 * - The coefficient solver reproduces the published first Polar Express quintics (arXiv
 *   2505.16932, computed without the safety factor) to 1e-9, and each fit is minimax: 1 − p
 *   equioscillates at four points and no perturbation lowers the maximum error.
 * - Singular-value band: NS with a schedule maps every singular value σ of the normalised
 *   input through the composed scalar polynomial, so the output's singular values lie in the
 *   image of the input's σ range under that composition (computed in float64 here), up to f32
 *   rounding, which Polar Express's steep first quintic (slope ≈ 14 near σ = 1) amplifies:
 *   measured ≤ 3e-6 on llvmpipe, 1.1e-4 on SwiftShader (1×4 input), and once just over 5e-4
 *   for a 1×4 input at σ = 1; checked 5e-4 around the image of the σ range widened by 2e-5
 *   relative (f32 normalisation moves σ by a few ulps, which the composition amplifies). For σ ∈ [1e-3, 1] that image is
 *   [0.852, 1.124] for Polar Express and [0.471, 1.202] for the quintic.
 * - Agreement with the polar factor U·Vᵀ: ‖NS(G) − U·Vᵀ‖₂ = max |p(σ) − 1| ≤ the band's
 *   distance from 1; Polar Express output and quintic output share their singular vectors.
 * - Gram NS equals standard NS up to rounding: measured ≤ 1.2e-6 with the default restart and
 *   up to 2.3e-5 without restarts (square 24×24); checked 5e-5 and 1e-4. (A 3×4 Gaussian,
 *   seed 999999990, differs by 2.4e-5 with the default restart under the Polar Express
 *   coefficients, on this code and on the stop-18 code alike: found by a random fast-check run.)
 *   Batch = loop.
 */
import * as mg from "../mod.ts";
import {
  minimaxQuintic,
  newtonSchulz,
  type NewtonSchulzOptions,
  type NsCoefficients,
  polarExpressCoefficients,
} from "../optim/mod.ts";
import { assertClose, assertMgError, check, fc, gpu } from "./util.ts";
import {
  frob,
  gaussian,
  type Mat,
  mul,
  polar,
  singularValues,
  transpose,
  withSingularValues,
} from "./reference/linalg.ts";
import assert from "node:assert/strict";

await gpu();

const QUINTIC: NsCoefficients = [3.4445, -4.775, 2.0315];
const Q5: NsCoefficients[] = Array(5).fill(QUINTIC);
const PE = polarExpressCoefficients();

const arbDim = fc.oneof(fc.integer({ min: 1, max: 24 }), fc.constantFrom(4, 8, 12, 16, 20, 36));
const arbMat = fc.tuple(arbDim, arbDim, fc.integer({ min: 1, max: 1e9 }));

async function ns(g: Mat, options: NewtonSchulzOptions = {}): Promise<Mat> {
  const t = mg.tensor(Array.from(g.a, Math.fround)).reshape([g.m, g.n]);
  const out = newtonSchulz(t, options);
  const a = Float64Array.from(await out.data());
  t.dispose();
  out.dispose();
  return { m: g.m, n: g.n, a };
}

/** The image of [lo, hi] under the composed scalar polynomials (dense float64 sweep). */
function band(schedule: readonly NsCoefficients[], lo: number, hi: number): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  const N = 20000;
  for (let i = 0; i <= N; i++) {
    let s = lo * (hi / lo) ** (i / N);
    for (const [a, b, c] of schedule) s = a * s + b * s ** 3 + c * s ** 5;
    min = Math.min(min, s);
    max = Math.max(max, s);
  }
  return [min, max];
}

Deno.test("Polar Express: the solver reproduces the published quintics (safety 0, 1e-9)", () => {
  const got = polarExpressCoefficients({ steps: 3, safety: 0 });
  const published = [
    [8.28721201814563, -23.595886519098837, 17.300387312530933],
    [4.107059111542203, -2.9478499167379106, 0.5448431082926601],
    [3.9486908534822946, -2.908902115962949, 0.5518191394370137],
  ];
  got.forEach((t, i) => assertClose(t, published[i], { rtol: 1e-9, atol: 0 }, `step ${i}`));
  // The safety factor divides (a, b, c) by (1.01, 1.01³, 1.01⁵) on all steps but the last.
  const safe = polarExpressCoefficients({ steps: 3 });
  assertClose(safe[0], [got[0][0] / 1.01, got[0][1] / 1.01 ** 3, got[0][2] / 1.01 ** 5], {
    rtol: 1e-12,
    atol: 0,
  });
  assertClose(safe[2], got[2], { rtol: 1e-12, atol: 0 }, "last step without safety");
  // A collapsed interval gives the quintic osculating 1 at 1: (15/8, −5/4, 3/8).
  assertClose(polarExpressCoefficients({ steps: 9, safety: 0 })[8], [1.875, -1.25, 0.375], {
    rtol: 1e-6,
    atol: 0,
  });
});

Deno.test("Polar Express: each fit is minimax on its interval (equioscillation, optimality)", async () => {
  await check(
    fc.tuple(fc.double({ min: -3, max: -0.05, noNaN: true }), fc.integer({ min: 1, max: 1e9 })),
    ([le, seed]) => {
      const l = 10 ** le;
      const c = minimaxQuintic(l, 1);
      const err = (t: readonly number[], x: number) =>
        1 - (t[0] * x + t[1] * x ** 3 + t[2] * x ** 5);
      let worst = 0;
      for (let i = 0; i <= 4000; i++) {
        worst = Math.max(worst, Math.abs(err(c, l + (1 - l) * i / 4000)));
      }
      // The endpoints are two of the four equioscillation points: |1 − p| = E there.
      assertClose([Math.abs(err(c, l)), Math.abs(err(c, 1))], [worst, worst], {
        rtol: 1e-6,
        atol: 1e-12,
      });
      assert.ok(err(c, l) > 0 && err(c, 1) < 0, "p(l) < 1 < p(1)");
      // No nearby triple does better (a perturbation breaks the alternation).
      let s = seed;
      for (let k = 0; k < 20; k++) {
        s = (s * 1103515245 + 12345) >>> 0;
        const d = ((s % 2001) - 1000) / 1000 * 1e-3;
        const t = [c[0] * (1 + d), c[1] * (1 - d / 2), c[2] * (1 + d / 3)];
        let w = 0;
        for (let i = 0; i <= 4000; i++) w = Math.max(w, Math.abs(err(t, l + (1 - l) * i / 4000)));
        assert.ok(w >= worst * (1 - 1e-9), `perturbation ${d} lowered the error ${worst} → ${w}`);
      }
      return Promise.resolve();
    },
    15,
  );
});

Deno.test("Polar Express options are validated", () => {
  assertMgError(() => polarExpressCoefficients({ steps: 0 }), "polarExpress", "steps");
  assertMgError(() => polarExpressCoefficients({ lower: 0 }), "polarExpress", "lower");
  assertMgError(() => polarExpressCoefficients({ safety: -1 }), "polarExpress", "safety");
  assertMgError(() => minimaxQuintic(0.5, 0.2), "polarExpress", "0 < l <= u");
});

Deno.test("NS singular-value band: Polar Express and quintic outputs lie in the composed image (5e-4)", async () => {
  assertClose(band(PE, 1e-3, 1), [0.8524, 1.1236], { rtol: 0, atol: 1e-4 }, "PE band");
  assertClose(band(Q5, 1e-3, 1), [0.4705, 1.2024], { rtol: 0, atol: 1e-4 }, "quintic band");
  await check(
    fc.tuple(arbDim, arbDim, fc.integer({ min: 1, max: 1e9 })),
    async ([m, n, seed]) => {
      const k = Math.min(m, n);
      // Singular values spread over two decades, so the normalised ones lie in [1e-3, 1].
      let r = seed;
      const s = Array.from({ length: k }, () => {
        r = (r * 1664525 + 1013904223) >>> 0;
        return 10 ** (-2 * (r / 2 ** 32));
      });
      const g = withSingularValues(m, n, s, seed);
      const f = frob(g);
      const lo = Math.min(...s) / f;
      const hi = Math.max(...s) / f;
      for (const [name, schedule] of [["polar express", PE], ["quintic", Q5]] as const) {
        for (const method of ["standard", "gram"] as const) {
          const out = await ns(g, { coefficients: schedule, method });
          // The input interval is widened by 2e-5 relative: f32 normalisation moves σ by a few
          // ulps, and the steep first quintics amplify that (a 1×k input sits exactly at σ = 1).
          const [bl, bh] = band(schedule, lo * (1 - 2e-5), hi * (1 + 2e-5));
          // The one-sided Jacobi SVD returns n values for an m×n matrix; the top k are σ.
          const sv = singularValues(out).subarray(0, k);
          for (const v of sv) {
            assert.ok(
              v > bl - 5e-4 && v < bh + 5e-4,
              `${name} ${method} ${m}×${n}: σ ${v} outside [${bl}, ${bh}]`,
            );
          }
        }
      }
    },
    12,
  );
});

Deno.test("NS vs the polar factor: ‖NS(G) − UVᵀ‖₂ within the band; PE and quintic share singular vectors", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const k = Math.min(m, n);
    const s = Array.from({ length: k }, (_, i) => 0.1 + 0.9 * ((i * 7919 + seed) % 97) / 96);
    const g = withSingularValues(m, n, s, seed);
    const u = polar(g);
    const f = frob(g);
    const pe = await ns(g, { coefficients: PE });
    const q5 = await ns(g, { coefficients: Q5 });
    for (const [name, out, sch] of [["PE", pe, PE], ["quintic", q5, Q5]] as const) {
      const [bl, bh] = band(sch, Math.min(...s) / f * (1 - 2e-5), Math.max(...s) / f * (1 + 2e-5));
      const diff: Mat = { m, n, a: out.a.map((v, i) => v - u.a[i]) };
      const err = Math.max(0, ...singularValues(diff).subarray(0, k));
      const bound = Math.max(1 - bl, bh - 1) + 5e-4;
      assert.ok(err <= bound, `${name} ${m}×${n}: ‖NS − UVᵀ‖₂ = ${err} > ${bound}`);
    }
    // Same singular vectors: PEᵀ·Q5 is symmetric positive semi-definite.
    const c = mul(transpose(pe), q5);
    const ct = transpose(c);
    assertClose(c.a, ct.a, { rtol: 0, atol: 1e-4 }, `PEᵀ·Q5 symmetric ${m}×${n}`);
    for (let i = 0; i < c.m; i++) assert.ok(c.a[i * c.n + i] >= -1e-4, "diagonal >= 0");
  }, 15);
});

Deno.test("Gram NS equals standard NS (default restart 5e-5; no restart 1e-4; quintic and PE)", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const g = gaussian(m, n, seed);
    for (const coefficients of [Q5, PE]) {
      const want = await ns(g, { coefficients });
      const got = await ns(g, { coefficients, method: "gram" });
      assertClose(got.a, want.a, { rtol: 0, atol: 5e-5 }, `gram ${m}×${n}`);
      const never = await ns(g, { coefficients, method: "gram", restarts: [] });
      assertClose(never.a, want.a, { rtol: 0, atol: 1e-4 }, `gram, no restart ${m}×${n}`);
    }
  }, 15);
});

Deno.test("Gram NS: batch = loop, zero maps to zero, no leak, options validated", async () => {
  const shapes: [number, number][] = [[6, 20], [20, 6], [8, 8]];
  for (const [A, B] of shapes) {
    const mats = [0, 1, 2].map((i) => gaussian(A, B, 40 + i));
    const flat = mats.flatMap((x) => Array.from(x.a, Math.fround));
    const t = mg.tensor(flat).reshape([3, A, B]);
    const live = mg.memory().liveTensors;
    const out = newtonSchulz(t, { method: "gram", coefficients: PE });
    const got = await out.data();
    out.dispose();
    assert.equal(mg.memory().liveTensors, live, "no tensor left behind");
    for (let i = 0; i < 3; i++) {
      const one = await ns(mats[i], { method: "gram", coefficients: PE });
      assertClose(
        got.subarray(i * A * B, (i + 1) * A * B),
        one.a,
        { rtol: 0, atol: 1e-6 },
        "batch",
      );
    }
    t.dispose();
  }
  const z = await ns({ m: 4, n: 9, a: new Float64Array(36) }, { method: "gram" });
  assert.ok(z.a.every((v) => v === 0), "zero maps to zero, no NaN");
  const x = mg.zeros([4, 4]);
  assertMgError(() => newtonSchulz(x, { method: "fast" as "gram" }), "newtonSchulz", "method");
  assertMgError(
    () => newtonSchulz(x, { method: "gram", restarts: [0] }),
    "newtonSchulz",
    "restarts",
  );
  x.dispose();
});

Deno.test("Muon with Gram NS and Polar Express: same update as standard NS with the same schedule (1e-5)", async () => {
  const run = async (nsMethod: "standard" | "gram") => {
    const w = mg.tensor(Array.from(gaussian(12, 40, 5).a, Math.fround)).reshape([12, 40]);
    w.requiresGrad = true;
    const opt = new mg.optim.Muon([w], { lr: 0.05, nsCoefficients: PE, nsMethod });
    mg.scope(() => w.square().sum().backward());
    await opt.step();
    const out = await w.data();
    opt.dispose();
    w.dispose();
    return out;
  };
  assertClose(await run("gram"), await run("standard"), { rtol: 0, atol: 1e-5 }, "muon gram");
  assertMgError(
    () => new mg.optim.Muon([mg.zeros([2, 2])], { lr: 1, nsMethod: "x" as "gram" }),
    "Muon",
    "nsMethod",
  );
});
