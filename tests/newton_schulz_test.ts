/**
 * Newton–Schulz orthogonalisation: every invariant of REFERENCE §6 as a fast-check property,
 * against float64 references (tests/reference/linalg.ts: Jacobi SVD, polar factor, float64
 * NS). Shapes are drawn tall, wide and square, with sizes that are and are not multiples of 4
 * (the gram kernel's vec4 and scalar paths) and batches.
 *
 * Tolerances: X is normalised to ‖X‖_F = 1, so entries are O(1/√min(A,B)); each step is
 * three f32 products of length ≤ 64, rounding ~1e-7 relative; the quintic's slope is at
 * most ~4 on the orbit, so after 5 steps errors stay below ~1e-5 absolute (measured 3e-7 to
 * 8e-7 against float64). We check 2e-5 absolute where two f32 computations are compared and
 * 5e-5 where a float64 orthogonal transform of a GPU result is compared with another GPU run
 * (the transform mixes up to 64 entries). A wrong coefficient, a missed transpose or
 * normalisation changes entries by ≥ 1e-2.
 */
import * as mg from "../mod.ts";
import { newtonSchulz, type NewtonSchulzOptions } from "../optim/mod.ts";
import { gram } from "../ops/optim.ts";
import { assertClose, check, fc, gpu } from "./util.ts";
import {
  frob,
  gaussian,
  type Mat,
  mul,
  nsRef,
  polar,
  randomOrthogonal,
  singularValues,
  transpose,
  withSingularValues,
} from "./reference/linalg.ts";
import assert from "node:assert/strict";

await gpu();

const QUINTIC: [number, number, number] = [3.4445, -4.775, 2.0315];
const Q5 = Array(5).fill(QUINTIC);

/** Sizes mixing multiples of 4 (vec4 gram path) and odd sizes (scalar path). */
const arbDim = fc.oneof(fc.integer({ min: 1, max: 24 }), fc.constantFrom(4, 8, 12, 16, 20, 36));
/** [rows, cols, seed]: tall, wide and square shapes alike. */
const arbMat = fc.tuple(arbDim, arbDim, fc.integer({ min: 1, max: 1e9 }));

function upload(mats: Mat[], lead: number[] = []): mg.Tensor {
  const { m, n } = mats[0];
  const flat = new Float32Array(mats.length * m * n);
  mats.forEach((x, i) => flat.set(x.a, i * m * n));
  return mg.tensor(Array.from(flat)).reshape([...lead, m, n]);
}

async function ns(g: Mat, options: NewtonSchulzOptions = {}): Promise<Mat> {
  const t = upload([g]);
  const out = newtonSchulz(t, options);
  const a = Float64Array.from(await out.data());
  t.dispose();
  out.dispose();
  return { m: g.m, n: g.n, a };
}

function scaled(c: number, x: Mat): Mat {
  return { m: x.m, n: x.n, a: x.a.map((v) => Math.fround(c * v)) };
}

Deno.test("gram: C = α·XXᵀ + β·D + γI matches float64 (vec4 and scalar paths, batched, 1e-5·K)", async () => {
  await check(
    fc.tuple(arbDim, arbDim, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 1e9 })),
    async ([R, K, nb, seed]) => {
      const xs = Array.from({ length: nb }, (_, i) => gaussian(R, K, seed + i));
      const ds = xs.map((x) => {
        const g = mul(x, transpose(x));
        return { m: R, n: R, a: g.a.map((v) => Math.fround(v / K)) };
      });
      const x = upload(xs, [nb]);
      const d = upload(ds, [nb]);
      const out = gram(x, { alpha: 0.5, d, beta: -2, gamma: 3 });
      const got = await out.data();
      const want = new Float64Array(nb * R * R);
      xs.forEach((xi, b) => {
        const g = mul(xi, transpose(xi));
        for (let i = 0; i < R * R; i++) {
          want[b * R * R + i] = 0.5 * g.a[i] - 2 * ds[b].a[i] + (i % (R + 1) === 0 ? 3 : 0);
        }
      });
      // Each entry is a length-K dot of N(0,1) values: rounding ≲ K·6e-8·Σ|xy| ≤ 1e-5·K.
      assertClose(got, want, { rtol: 1e-5, atol: 1e-5 * K }, `gram ${nb}×${R}×${K}`);
      [x, d, out].forEach((t) => t.dispose());
    },
    20,
  );
  // Several 64-wide tiles on the vec4 path: off-diagonal tiles and their mirrors.
  const xm = gaussian(132, 8, 5);
  const x = upload([xm], [1]);
  const out = gram(x);
  assertClose(await out.data(), mul(xm, transpose(xm)).a, { rtol: 1e-5, atol: 1e-4 }, "gram 132");
  x.dispose();
  out.dispose();
});

Deno.test("NS matches the float64 NS (quintic, 5 steps; symmetric and general paths; 2e-5)", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const g = gaussian(m, n, seed);
    const want = nsRef(g, Q5);
    for (const symmetric of [true, false]) {
      const got = await ns(g, { symmetric });
      assertClose(got.a, want.a, { rtol: 0, atol: 2e-5 }, `NS ${m}×${n} symmetric=${symmetric}`);
    }
  }, 20);
});

Deno.test("NS: transpose NS(Gᵀ) = NS(G)ᵀ and sign NS(−G) = −NS(G) (bit-exact)", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const g = gaussian(m, n, seed);
    const a = await ns(g);
    const at = await ns(transpose(g));
    assertClose(at.a, transpose(a).a, { rtol: 0, atol: 2e-5 }, `transpose ${m}×${n}`);
    // Negation commutes exactly with every f32 operation on the path (norms, squares, the
    // two grams are even in X; the product P·X is odd), so the result is bit-exact.
    const neg = await ns(scaled(-1, g));
    neg.a.forEach((v, i) => assert.equal(v, -a.a[i], `sign ${m}×${n} at ${i}`));
  }, 20);
});

Deno.test("NS: orthogonal equivariance NS(Q₁GQ₂) = Q₁·NS(G)·Q₂ (5e-5)", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const g = gaussian(m, n, seed);
    const q1 = randomOrthogonal(m, seed + 1);
    const q2 = randomOrthogonal(n, seed + 2);
    const rotated = mul(mul(q1, g), q2);
    const lhs = await ns({ m, n, a: rotated.a.map(Math.fround) });
    const rhs = mul(mul(q1, await ns(g)), q2);
    assertClose(lhs.a, rhs.a, { rtol: 0, atol: 5e-5 }, `equivariance ${m}×${n}`);
  }, 15);
});

Deno.test("NS: positive scale invariance for c in [1e-3, 1e3] with ‖cG‖ >= 0.1 (2e-5)", async () => {
  await check(
    fc.tuple(arbMat, fc.double({ min: -3, max: 3, noNaN: true })),
    async ([[m, n, seed], e]) => {
      const g = gaussian(m, n, seed);
      // Invariance holds while eps = 1e-7 is negligible next to ‖cG‖_F: the normalised input
      // shrinks by eps/‖cG‖_F, so keep ‖cG‖_F >= 0.1 (shrink <= 1e-6); the next test shows
      // where eps takes over.
      const c = Math.fround(Math.max(10 ** e, 0.1 / frob(g)));
      const a = await ns(g);
      const b = await ns(scaled(c, g));
      assertClose(b.a, a.a, { rtol: 0, atol: 2e-5 }, `scale ${c} on ${m}×${n}`);
    },
    15,
  );
});

Deno.test("NS: eps breaks scale invariance once ‖cG‖_F approaches eps = 1e-7", async () => {
  // X = cG/(c‖G‖ + eps) has norm 1/(1 + eps/(c‖G‖)): the relative shrink is eps/‖cG‖_F.
  // At ‖cG‖_F = 1e-2 that is 1e-5 (below the f32 rounding of the scaled input); at ‖cG‖_F = eps every singular value is
  // halved before the iteration and 5 steps no longer bring it into the band.
  const g = withSingularValues(12, 20, Array.from({ length: 12 }, (_, i) => 0.5 + i / 24), 3);
  const base = await ns({ m: 12, n: 20, a: g.a.map(Math.fround) });
  const norm = frob(g);
  const at = async (target: number) => {
    const r = await ns(scaled(target / norm, g));
    return Math.max(...r.a.map((v, i) => Math.abs(v - base.a[i])));
  };
  const far = await at(1e-2);
  const near = await at(1e-7);
  const tiny = await at(1e-9);
  assert.ok(far < 3e-5, `‖cG‖=1e-2: deviation ${far} should be < 3e-5 (f32 rounding level)`);
  assert.ok(near > 1e-2, `‖cG‖=eps: deviation ${near} should be > 1e-2 (eps dominates)`);
  assert.ok(tiny > near, `‖cG‖=1e-9: deviation ${tiny} should exceed ${near}`);
});

const band = { lo: Infinity, hi: -Infinity };

Deno.test("NS: singular values of well-conditioned inputs (σ in [1, 4]) land in [0.65, 1.2]", async () => {
  await check(
    fc.tuple(
      arbDim,
      arbDim,
      fc.integer({ min: 1, max: 1e9 }),
      fc.double({ min: 1, max: 4, noNaN: true }),
    ),
    async ([m, n, seed, kappa]) => {
      const r = Math.min(m, n);
      const s = Array.from({ length: r }, (_, i) => 1 + ((kappa - 1) * i) / Math.max(r - 1, 1));
      const g = withSingularValues(m, n, s, seed);
      const out = await ns({ m, n, a: g.a.map(Math.fround) });
      const sv = singularValues(out);
      for (const v of sv) {
        band.lo = Math.min(band.lo, v);
        band.hi = Math.max(band.hi, v);
        assert.ok(v >= 0.65 && v <= 1.2, `${m}×${n} κ=${kappa}: σ = ${v} outside [0.65, 1.2]`);
      }
    },
    25,
  );
  console.log(`observed singular-value band after 5 quintic steps: [${band.lo}, ${band.hi}]`);
});

Deno.test("NS: same singular vectors — NS(G)ᵀG symmetric PSD and ⟨NS(G), G⟩ > 0", async () => {
  await check(arbMat, async ([m, n, seed]) => {
    const g = gaussian(m, n, seed);
    const o = await ns(g);
    const s = mul(transpose(o), g); // n×n
    const scale = frob(g);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) {
        const d = Math.abs(s.a[i * n + j] - s.a[j * n + i]);
        assert.ok(d <= 1e-4 * scale, `${m}×${n}: S[${i},${j}] asymmetric by ${d}`);
      }
    }
    // A symmetric S is PSD iff trace(S) = Σσ(S) (the nuclear norm): Σλ = Σ|λ| iff all λ ≥ 0.
    let trace = 0;
    for (let i = 0; i < n; i++) trace += s.a[i * n + i];
    const nuclear = singularValues(s).reduce((x, y) => x + y, 0);
    assert.ok(trace > 0, `${m}×${n}: ⟨NS(G), G⟩ = ${trace} should be > 0`);
    assert.ok(
      Math.abs(nuclear - trace) <= 1e-4 * nuclear,
      `${m}×${n}: trace ${trace} != nuclear norm ${nuclear}: not PSD`,
    );
  }, 20);
});

Deno.test("NS: rank is preserved for rank-deficient inputs", async () => {
  await check(
    fc.tuple(arbMat, fc.integer({ min: 0, max: 30 })),
    async ([[m, n, seed], k0]) => {
      const r = Math.min(m, n);
      const k = k0 % (r + 1);
      const s = Array.from({ length: r }, (_, i) => (i < k ? 0.5 + (i % 3) / 4 : 0));
      const g = withSingularValues(m, n, s, seed);
      const out = await ns({ m, n, a: g.a.map(Math.fround) });
      const sv = singularValues(out);
      // Rounding of the zero directions (~1e-7) is amplified by p'(0)⁵ = 3.4445⁵ ≈ 485 at
      // most: below 1e-3, while kept directions land near 1.
      const rank = sv.filter((v) => v > 1e-2).length;
      assert.equal(rank, k, `${m}×${n} rank ${k}: singular values [${Array.from(sv)}]`);
      assert.ok(sv.every((v, i) => i < k || v < 1e-3), `${m}×${n}: zero directions grew`);
    },
    15,
  );
});

Deno.test("NS: zero maps to zero without NaN (single and batched, both paths)", async () => {
  for (const shape of [[5, 7], [8, 8], [3, 12, 4], [2, 1, 1]]) {
    for (const symmetric of [true, false]) {
      const z = mg.zeros(shape);
      const out = newtonSchulz(z, { symmetric });
      const d = await out.data();
      assert.ok(d.every((v) => v === 0 && !Object.is(v, NaN)), `zeros ${shape}: got ${d}`);
      z.dispose();
      out.dispose();
    }
  }
});

Deno.test("NS: a batch [..., A, B] equals the loop over its slices (1e-6)", async () => {
  await check(
    fc.tuple(arbMat, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 2 })),
    async ([[m, n, seed], b0, b1]) => {
      const mats = Array.from({ length: b0 * b1 }, (_, i) => gaussian(m, n, seed + i));
      // One slice is zero: it must stay zero and not disturb its neighbours' normalisation.
      mats[mats.length - 1] = { m, n, a: new Float64Array(m * n) };
      const t = upload(mats, [b0, b1]);
      const out = newtonSchulz(t);
      assert.deepEqual(out.shape, [b0, b1, m, n]);
      const got = await out.data();
      for (let i = 0; i < mats.length; i++) {
        const one = await ns(mats[i]);
        assertClose(got.subarray(i * m * n, (i + 1) * m * n), one.a, {
          rtol: 0,
          atol: 1e-6,
        }, `slice ${i} of ${b0}×${b1}×${m}×${n}`);
      }
      t.dispose();
      out.dispose();
    },
    10,
  );
});

Deno.test("NS: 40 cubic steps match the exact polar factor U·Vᵀ from the float64 SVD (1e-4)", async () => {
  await check(
    fc.tuple(arbDim, arbDim, fc.integer({ min: 1, max: 1e9 })),
    async ([m, n, seed]) => {
      const r = Math.min(m, n);
      const s = Array.from({ length: r }, (_, i) => 1 + (2 * i) / Math.max(r - 1, 1));
      const g = withSingularValues(m, n, s, seed);
      const gf = { m, n, a: g.a.map(Math.fround) };
      const got = await ns(gf, { coefficients: [1.5, -0.5, 0], steps: 40 });
      const want = polar(gf);
      assertClose(got.a, want.a, { rtol: 0, atol: 1e-4 }, `cubic vs polar ${m}×${n}`);
      // The oracle itself: all singular values 1 and idempotent.
      assert.ok(singularValues(want).every((v) => Math.abs(v - 1) < 1e-9), "polar σ != 1");
      assertClose(polar(want).a, want.a, { rtol: 0, atol: 1e-9 }, "polar idempotent");
    },
    15,
  );
});

Deno.test("NS: a per-step coefficient schedule is applied in order", async () => {
  const g = gaussian(9, 14, 77);
  const schedule: [number, number, number][] = [[3.4445, -4.775, 2.0315], [2, -1.5, 0.5], [
    1.5,
    -0.5,
    0,
  ]];
  const got = await ns(g, { coefficients: schedule });
  assertClose(got.a, nsRef(g, schedule).a, { rtol: 0, atol: 2e-5 }, "schedule");
  const reversed = nsRef(g, [...schedule].reverse());
  assert.ok(got.a.some((v, i) => Math.abs(v - reversed.a[i]) > 1e-3), "order must matter");
  const zeroSteps = await ns(g, { steps: 0 });
  assertClose(
    zeroSteps.a,
    g.a.map((v) => v / (frob(g) + 1e-7)),
    { rtol: 1e-6, atol: 1e-7 },
    "0 steps",
  );
});

Deno.test("NS: bad input throws a MoongradError naming newtonSchulz", () => {
  const v = mg.zeros([4]);
  const i = mg.zeros([3, 3], { dtype: "i32" });
  const m = mg.zeros([3, 3]);
  const bad: [() => unknown, RegExp][] = [
    [() => newtonSchulz(v), /rank 1/],
    [() => newtonSchulz(i), /needs f32, got i32/],
    [
      () => newtonSchulz(m, { coefficients: [1, 2] as unknown as [number, number, number] }),
      /triple/,
    ],
    [() => newtonSchulz(m, { steps: 2, coefficients: [[1, 0, 0]] }), /differs/],
    [() => newtonSchulz(m, { steps: -1 }), /steps/],
    [() => newtonSchulz(m, { coefficients: [NaN, 0, 0] }), /finite/],
  ];
  for (const [f, re] of bad) {
    assert.throws(
      f,
      (e: Error) =>
        e instanceof mg.MoongradError && /newtonSchulz/.test(e.message) && re.test(e.message),
    );
  }
  [v, i, m].forEach((t) => t.dispose());
});
