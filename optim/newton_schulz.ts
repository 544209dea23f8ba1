/**
 * Newton–Schulz orthogonalisation on the GPU (REFERENCE §1): an approximation of the polar
 * factor U·Vᵀ of G = U·S·Vᵀ that maps every singular value through the odd polynomial
 * p(σ) = aσ + bσ³ + cσ⁵ per step and leaves the singular vectors alone.
 */
import { contiguousStrides } from "../core/shape.ts";
import { noGrad } from "../core/autograd.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { gpuDevice } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous } from "../ops/elementwise.ts";
import { pointwise } from "../ops/pointwise.ts";
import { matmul } from "../ops/matmul.ts";
import { frobeniusNormalize, gram } from "../ops/optim.ts";

/**
 * One step's polynomial coefficients (a, b, c) of p(σ) = aσ + bσ³ + cσ⁵.
 *
 * @example A custom per-step triple
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const c: mg.optim.NsCoefficients = [3.4445, -4.775, 2.0315];
 * const p = (s: number) => c[0] * s + c[1] * s ** 3 + c[2] * s ** 5; // one step on a singular value
 * ```
 */
export type NsCoefficients = readonly [number, number, number];

/**
 * Keller Jordan's quintic, tuned for speed (p(1) ≈ 0.70; values settle in ~[0.7, 1.2]).
 *
 * @example The default coefficients
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.optim.QUINTIC_COEFFICIENTS); // [3.4445, -4.775, 2.0315]
 * ```
 */
export const QUINTIC_COEFFICIENTS: NsCoefficients = Object.freeze([3.4445, -4.775, 2.0315]);

/**
 * The cubic Newton–Schulz iteration (1.5σ − 0.5σ³): slow but converges to exactly 1.
 *
 * @example Converge exactly, slowly
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const g = mg.randn([16, 32], { seed: 0 });
 * const o = mg.optim.newtonSchulz(g, { coefficients: mg.optim.CUBIC_COEFFICIENTS, steps: 30 });
 * // o·oᵀ ≈ I (singular values all driven to 1)
 * ```
 */
export const CUBIC_COEFFICIENTS: NsCoefficients = Object.freeze([1.5, -0.5, 0]);

/**
 * Options of `newtonSchulz`.
 *
 * @example Ten quintic steps without the gram kernel
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.NewtonSchulzOptions = { steps: 10, symmetric: false, eps: 1e-7 };
 * ```
 */
export interface NewtonSchulzOptions {
  /** Number of iterations (default 5, or the length of a per-step coefficient list). */
  steps?: number;
  /** One triple used at every step, or one triple per step (default: the quintic). */
  coefficients?: NsCoefficients | readonly NsCoefficients[];
  /** Added to the Frobenius norm before dividing (default 1e-7). */
  eps?: number;
  /**
   * Compute X·Xᵀ and b·M + c·M² + a·I with the symmetric gram kernel (upper-triangle tiles,
   * mirrored, fused epilogue) instead of general matmuls (default true).
   */
  symmetric?: boolean;
  /**
   * "standard" (default): each step multiplies the whole [min, max] iterate. "gram": iterate
   * on the small symmetric Gram matrix R = X·Xᵀ instead (Gram Newton–Schulz): with
   * P = a·I + b·R + c·R², keep Q ← P·Q and R ← P·R·P, and form X = Q·X₀ once at the end, so
   * a step costs O(min³) instead of O(min²·max) — cheaper when the matrix is far from square.
   */
  method?: NsMethod;
  /**
   * Gram method only: steps after which the iteration restarts from the current iterate
   * (X ← Q·X₀, R ← X·Xᵀ, Q ← I), which resets the rounding R accumulates through the
   * products (default [2]: once, after the second step, as the method's authors do for five
   * steps; [] never restarts).
   */
  restarts?: readonly number[];
}

/**
 * How `newtonSchulz` iterates: on the full iterate ("standard") or on its Gram matrix ("gram").
 *
 * @example Pick Gram Newton–Schulz for a wide matrix
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const method: mg.optim.NsMethod = "gram";
 * ```
 */
export type NsMethod = "standard" | "gram";

function isTriple(c: unknown): c is NsCoefficients {
  return Array.isArray(c) && c.length === 3 && c.every((v) => typeof v === "number");
}

/**
 * The per-step coefficient schedule an options object describes (validated).
 *
 * @example Expand options into per-step triples
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.optim.nsSchedule({ steps: 2 })); // [[3.4445, -4.775, 2.0315], [3.4445, -4.775, 2.0315]]
 * console.log(mg.optim.nsSchedule({ coefficients: [[1.5, -0.5, 0]] }).length); // 1
 * // mg.optim.nsSchedule({ steps: -1 }) throws a MoongradError
 * ```
 */
export function nsSchedule(options: NewtonSchulzOptions = {}): NsCoefficients[] {
  const c = options.coefficients ?? QUINTIC_COEFFICIENTS;
  let schedule: NsCoefficients[];
  if (isTriple(c)) {
    const steps = options.steps ?? 5;
    if (!Number.isInteger(steps) || steps < 0) {
      throw new MoongradError("newtonSchulz", `steps must be an integer >= 0, got ${steps}`);
    }
    schedule = Array.from({ length: steps }, () => c);
  } else if (Array.isArray(c) && c.every(isTriple)) {
    if (options.steps !== undefined && options.steps !== c.length) {
      throw new MoongradError(
        "newtonSchulz",
        `steps ${options.steps} differs from the ${c.length} per-step coefficient triples`,
      );
    }
    schedule = [...c];
  } else {
    throw new MoongradError(
      "newtonSchulz",
      `coefficients must be a triple [a, b, c] or a list of triples, got ${JSON.stringify(c)}`,
    );
  }
  for (const t of schedule) {
    if (!t.every(Number.isFinite)) {
      throw new MoongradError("newtonSchulz", `coefficients must be finite, got [${t}]`);
    }
  }
  return schedule;
}

/**
 * Orthogonalises `g` [A, B] or each matrix of a batch [..., A, B] (f32) by Newton–Schulz
 * iteration and returns a new contiguous tensor of the same shape (not recorded by autograd):
 *
 * - transpose rule: a tall matrix (A > B) is iterated as its transpose, so that the Gram
 *   matrix X·Xᵀ is the small min(A, B)² one; the normalising copy absorbs that transpose
 *   and the last product writes the original orientation through a transposed view
 *   (Xᵀ·P = (P·X)ᵀ since P is symmetric), so no transpose is ever materialised separately;
 * - per-matrix Frobenius normalisation X = G / (‖G‖_F + eps);
 * - each step X ← (a·I + b·M + c·M²)·X with M = X·Xᵀ. With `symmetric` (default) M and
 *   P = c·M·Mᵀ + b·M + a·I each come from the gram kernel (upper-triangle tiles only, fused
 *   epilogue), then one general matmul P·X: 3 dispatches per step.
 *
 * The zero matrix maps to zero (no NaN). Scale invariance holds while ‖G‖_F ≫ eps.
 *
 * @example Orthogonalise a gradient matrix
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const g = mg.randn([64, 256], { seed: 0 });
 * const o = mg.optim.newtonSchulz(g); // [64, 256], singular values in about [0.7, 1.2]
 * const batch = mg.optim.newtonSchulz(mg.randn([8, 32, 16], { seed: 1 }), { steps: 5 }); // per matrix
 * console.log(o.shape, batch.shape); // [64, 256] [8, 32, 16]
 * ```
 */
export function newtonSchulz(g: Tensor, options: NewtonSchulzOptions = {}): Tensor {
  if (!(g instanceof Tensor)) {
    throw new MoongradError("newtonSchulz", `argument g must be a Tensor, got ${String(g)}`);
  }
  g.storage("newtonSchulz");
  if (g.rank < 2) {
    throw new MoongradError(
      "newtonSchulz",
      `needs a matrix [A, B] or a batch [..., A, B], got rank ${g.rank} ${fmtShape(g.shape)}`,
    );
  }
  if (g.dtype !== "f32") {
    throw new MoongradError("newtonSchulz", `needs f32, got ${g.dtype} ${fmtShape(g.shape)}`);
  }
  const schedule = nsSchedule(options);
  const eps = options.eps ?? 1e-7;
  if (!(eps >= 0)) throw new MoongradError("newtonSchulz", `eps must be >= 0, got ${eps}`);
  const symmetric = options.symmetric ?? true;
  const method = options.method ?? "standard";
  if (method !== "standard" && method !== "gram") {
    throw new MoongradError("newtonSchulz", `method must be "standard" or "gram", got ${method}`);
  }
  const restarts = new Set(options.restarts ?? [2]);
  for (const r of restarts) {
    if (!Number.isInteger(r) || r < 1) {
      throw new MoongradError(
        "newtonSchulz",
        `restarts must list step counts >= 1, got ${JSON.stringify(options.restarts)}`,
      );
    }
  }
  // The batch is one axis of the kernels' launch grids: check it before allocating anything.
  const batch = g.size / Math.max(g.shape[g.rank - 2] * g.shape[g.rank - 1], 1);
  const most = gpuDevice("newtonSchulz").limits.maxComputeWorkgroupsPerDimension;
  if (batch > most) {
    throw new MoongradError(
      "newtonSchulz",
      `a batch of ${batch} matrices (g ${fmtShape(g.shape)}) exceeds this device's ` +
        `maxComputeWorkgroupsPerDimension ${most}; orthogonalise it in pieces`,
    );
  }
  return noGrad(() => {
    const A = g.shape[g.rank - 2];
    const B = g.shape[g.rank - 1];
    const nb = g.size / Math.max(A * B, 1);
    if (g.size === 0) return Tensor.empty(g.shape, "f32");
    const src = g.isContiguous ? g : contiguous(g);
    const g3 = src.view([nb, A, B], [A * B, B, 1], src.offset);
    if (src !== g) src.dispose();
    const tall = A > B;
    let x = frobeniusNormalize(g3, eps, tall);
    g3.dispose();
    if (method === "gram" && schedule.length > 0) {
      const y = gramIterate(x, schedule, restarts, tall);
      x.dispose();
      const out = y.view(g.shape, contiguousStrides(g.shape), y.offset);
      y.dispose();
      return out;
    }
    schedule.forEach(([a, b, c], s) => {
      const p = symmetric ? polySymmetric(x, a, b, c) : polyGeneral(x, a, b, c);
      let next: Tensor;
      if (tall && s === schedule.length - 1) {
        const xt = x.view([nb, x.shape[2], x.shape[1]], [x.strides[0], 1, x.strides[1]], x.offset);
        next = matmul(xt, p);
        xt.dispose();
      } else next = matmul(p, x);
      p.dispose();
      x.dispose();
      x = next;
    });
    if (tall && schedule.length === 0) {
      const xt = x.view([nb, A, B], [A * B, 1, A], x.offset);
      const c = contiguous(xt);
      xt.dispose();
      x.dispose();
      x = c;
    }
    const out = x.view(g.shape, contiguousStrides(g.shape), x.offset);
    x.dispose();
    return out;
  });
}

/**
 * Gram Newton–Schulz on a normalised wide batch x [nb, n, m] (n ≤ m): R = X·Xᵀ, and per step
 * P = a·I + b·R + c·R² (one symmetric gram product), Q ← P·Q, R ← P·R·P (X_{t+1} = P·X_t, so
 * X_{t+1}·X_{t+1}ᵀ = P·R·P); a restart forms X = Q·X₀ and R = X·Xᵀ afresh. Every P of a
 * segment is a polynomial in the same R, so they commute and Q is symmetric up to rounding.
 * The result Q·X₀ is written in the original orientation (Xᵀ·Qᵀ for a tall input).
 */
function gramIterate(
  x0: Tensor,
  schedule: readonly NsCoefficients[],
  restarts: ReadonlySet<number>,
  tall: boolean,
): Tensor {
  const nb = x0.shape[0];
  let x = x0;
  let r = gram(x);
  let q: Tensor | null = null;
  const free = (...ts: (Tensor | null)[]) => ts.forEach((t) => t?.dispose());
  schedule.forEach(([a, b, c], s) => {
    const p = gram(r, { alpha: c, d: r, beta: b, gamma: a, symmetricInput: true });
    const nextQ = q ? matmul(p, q) : p;
    if (q) free(q);
    q = nextQ;
    const last = s === schedule.length - 1;
    if (!last && restarts.has(s + 1)) {
      const nx = matmul(q, x);
      free(r, q, p === q ? null : p, x === x0 ? null : x);
      q = null;
      x = nx;
      r = gram(x);
    } else if (!last) {
      const pr = matmul(p, r);
      free(r);
      r = matmul(pr, p);
      free(pr, p === q ? null : p);
    } else if (p !== q) free(p);
  });
  free(r);
  // The last step always leaves Q set (restarts happen only between steps).
  const qf = q as unknown as Tensor;
  const n = qf.shape[1];
  let out: Tensor;
  if (tall) {
    const m = x.shape[2];
    const xt = x.view([nb, m, n], [x.strides[0], 1, x.strides[1]], x.offset);
    const qt = qf.view([nb, n, n], [qf.strides[0], 1, qf.strides[1]], qf.offset);
    out = matmul(xt, qt);
    free(xt, qt);
  } else out = matmul(qf, x);
  free(qf, x === x0 ? null : x);
  return out;
}

/** P = a·I + b·M + c·M·M with M = X·Xᵀ, via two symmetric gram products (M·M = M·Mᵀ). */
function polySymmetric(x: Tensor, a: number, b: number, c: number): Tensor {
  const m = gram(x);
  const p = gram(m, { alpha: c, d: m, beta: b, gamma: a, symmetricInput: true });
  m.dispose();
  return p;
}

/** The same polynomial with general matmuls through transposed views and one pointwise pass. */
function polyGeneral(x: Tensor, a: number, b: number, c: number): Tensor {
  const [nb, R] = x.shape;
  const xt = x.view([nb, x.shape[2], R], [x.strides[0], 1, x.strides[1]], x.offset);
  const m = matmul(x, xt);
  xt.dispose();
  const mm = matmul(m, m);
  const p = pointwise(
    "ns_poly",
    [m, mm, { scalar: a, dtype: "f32" }, { scalar: b, dtype: "f32" }, {
      scalar: c,
      dtype: "f32",
    }, { scalar: R, dtype: "i32" }],
    [nb, R, R],
    "f32",
    "v2 * select(0.0, 1.0, (i % u32(v5 * v5)) / u32(v5) == (i % u32(v5))) + v3 * v0 + v4 * v1",
  );
  m.dispose();
  mm.dispose();
  return p;
}
