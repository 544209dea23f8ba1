/**
 * Float64 dense linear algebra for the optimizer tests: row-major matrices as Float64Array,
 * an SVD by one-sided Jacobi rotations, the polar factor, random orthogonal matrices and a
 * float64 Newton–Schulz. Written for obviousness (O(n³) per sweep), for matrices up to ~100.
 */
import { mulberry32 } from "../../core/random.ts";

/** A row-major m×n float64 matrix. */
export interface Mat {
  /** Rows. */
  m: number;
  /** Columns. */
  n: number;
  /** Row-major values, length m·n. */
  a: Float64Array;
}

/** Wraps values as an m×n matrix (copied to float64). */
export function mat(values: ArrayLike<number>, m: number, n: number): Mat {
  if (values.length !== m * n) throw new Error(`mat: ${values.length} values for ${m}×${n}`);
  return { m, n, a: Float64Array.from(values) };
}

/** C = A·B. */
export function mul(x: Mat, y: Mat): Mat {
  if (x.n !== y.m) throw new Error(`mul: ${x.m}×${x.n} · ${y.m}×${y.n}`);
  const c = new Float64Array(x.m * y.n);
  for (let i = 0; i < x.m; i++) {
    for (let k = 0; k < x.n; k++) {
      const v = x.a[i * x.n + k];
      if (v === 0) continue;
      for (let j = 0; j < y.n; j++) c[i * y.n + j] += v * y.a[k * y.n + j];
    }
  }
  return { m: x.m, n: y.n, a: c };
}

/** Aᵀ. */
export function transpose(x: Mat): Mat {
  const c = new Float64Array(x.m * x.n);
  for (let i = 0; i < x.m; i++) for (let j = 0; j < x.n; j++) c[j * x.m + i] = x.a[i * x.n + j];
  return { m: x.n, n: x.m, a: c };
}

/** α·A (+ β·B when given). */
export function axpby(alpha: number, x: Mat, beta = 0, y?: Mat): Mat {
  const c = new Float64Array(x.a.length);
  for (let i = 0; i < c.length; i++) c[i] = alpha * x.a[i] + (y ? beta * y.a[i] : 0);
  return { m: x.m, n: x.n, a: c };
}

/** Frobenius norm. */
export function frob(x: Mat): number {
  let s = 0;
  for (const v of x.a) s += v * v;
  return Math.sqrt(s);
}

/** The n×n identity. */
export function eye(n: number): Mat {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) a[i * n + i] = 1;
  return { m: n, n, a };
}

/** A thin SVD: A = U·diag(S)·Vᵀ with U m×r, V n×r, r = min(m, n), S descending, ≥ 0. */
export interface Svd {
  /** Left singular vectors as columns, m×r. */
  u: Mat;
  /** Singular values, descending. */
  s: Float64Array;
  /** Right singular vectors as columns, n×r. */
  v: Mat;
}

/**
 * SVD by one-sided Jacobi: rotate pairs of columns of a copy of A (m ≥ n; wide inputs are
 * transposed) until every pair is orthogonal to relative precision 1e-15, accumulating the
 * rotations in V. Then σⱼ = ‖colⱼ‖ and uⱼ = colⱼ/σⱼ (left zero where σⱼ = 0).
 */
export function svd(x: Mat): Svd {
  if (x.m < x.n) {
    const t = svd(transpose(x));
    return { u: t.v, s: t.s, v: t.u };
  }
  const { m, n } = x;
  const w = Float64Array.from(x.a);
  const v = eye(n).a;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < m; i++) {
          const wp = w[i * n + p], wq = w[i * n + q];
          alpha += wp * wp;
          beta += wq * wq;
          gamma += wp * wq;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const wp = w[i * n + p], wq = w[i * n + q];
          w[i * n + p] = c * wp - s * wq;
          w[i * n + q] = s * wp + c * wq;
        }
        for (let i = 0; i < n; i++) {
          const vp = v[i * n + p], vq = v[i * n + q];
          v[i * n + p] = c * vp - s * vq;
          v[i * n + q] = s * vp + c * vq;
        }
      }
    }
    if (!rotated) break;
  }
  const sv = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < m; i++) s += w[i * n + j] ** 2;
    return { j, s: Math.sqrt(s) };
  }).sort((a, b) => b.s - a.s);
  const u = new Float64Array(m * n);
  const vv = new Float64Array(n * n);
  sv.forEach(({ j, s }, k) => {
    for (let i = 0; i < m; i++) u[i * n + k] = s > 0 ? w[i * n + j] / s : 0;
    for (let i = 0; i < n; i++) vv[i * n + k] = v[i * n + j];
  });
  return { u: { m, n, a: u }, s: Float64Array.from(sv, (e) => e.s), v: { m: n, n, a: vv } };
}

/** Singular values, descending. */
export function singularValues(x: Mat): Float64Array {
  return svd(x).s;
}

/** Numerical rank: singular values above `relTol`·σ_max. */
export function rank(x: Mat, relTol = 1e-6): number {
  const s = singularValues(x);
  return s.filter((v) => v > relTol * (s[0] || 0)).length;
}

/**
 * The polar factor U_r·V_rᵀ over the singular values above `relTol`·σ_max (for a full-rank
 * matrix the orthogonal polar factor; for a rank-deficient one the partial isometry that
 * Newton–Schulz converges to, since it maps σ = 0 to 0).
 */
export function polar(x: Mat, relTol = 1e-9): Mat {
  const { u, s, v } = svd(x);
  const r = s.length;
  const out = new Float64Array(x.m * x.n);
  for (let k = 0; k < r; k++) {
    if (!(s[k] > relTol * s[0])) continue;
    for (let i = 0; i < x.m; i++) {
      const uik = u.a[i * r + k];
      for (let j = 0; j < x.n; j++) out[i * x.n + j] += uik * v.a[j * r + k];
    }
  }
  return { m: x.m, n: x.n, a: out };
}

/** Deterministic uniform [0, 1) generator (mulberry32, core/random.ts). */
export function rng(seed: number): () => number {
  return mulberry32(seed);
}

/** An m×n matrix of standard normal values (Box–Muller), rounded to f32. */
export function gaussian(m: number, n: number, seed: number): Mat {
  const r = rng(seed);
  const a = new Float64Array(m * n);
  for (let i = 0; i < a.length; i++) {
    const u1 = Math.max(r(), 1e-300);
    a[i] = Math.fround(Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * r()));
  }
  return { m, n, a };
}

/** A random n×n orthogonal matrix: modified Gram–Schmidt on a Gaussian matrix. */
export function randomOrthogonal(n: number, seed: number): Mat {
  const g = gaussian(n, n, seed);
  const q = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) q[i * n + j] = g.a[i * n + j];
    for (let k = 0; k < j; k++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += q[i * n + k] * q[i * n + j];
      for (let i = 0; i < n; i++) q[i * n + j] -= d * q[i * n + k];
    }
    let s = 0;
    for (let i = 0; i < n; i++) s += q[i * n + j] ** 2;
    s = Math.sqrt(s);
    for (let i = 0; i < n; i++) q[i * n + j] /= s;
  }
  return { m: n, n, a: q };
}

/**
 * A matrix with the given singular values: Q₁·diag(s)·Q₂ (random orthogonal Q₁ m×m, Q₂ n×n),
 * `s` of length min(m, n). Use zeros in `s` for rank-deficient inputs.
 */
export function withSingularValues(m: number, n: number, s: readonly number[], seed: number): Mat {
  const q1 = randomOrthogonal(m, seed);
  const q2 = randomOrthogonal(n, seed + 7919);
  const d = new Float64Array(m * n);
  s.forEach((v, k) => (d[k * n + k] = v));
  return mul(mul(q1, { m, n, a: d }), q2);
}

/** Float64 Newton–Schulz with the same transpose rule and normalisation as the GPU one. */
export function nsRef(g: Mat, schedule: readonly (readonly number[])[], eps = 1e-7): Mat {
  const tall = g.m > g.n;
  let x = tall ? transpose(g) : g;
  x = axpby(1 / (frob(x) + eps), x);
  for (const [a, b, c] of schedule) {
    const m = mul(x, transpose(x));
    const p = axpby(b, m, c, mul(m, m));
    x = axpby(a, x, 1, mul(p, x));
  }
  return tall ? transpose(x) : x;
}
