/**
 * Float64 references for the nn foundation: Linear, RMSNorm, RoPE (both pair layouts, YaRN's
 * tables and factors) and the SwiGLU MLP, forward and vjp. Leading axes are flattened to rows; weights use HF layouts
 * (Linear weight [out, in]).
 */
import { NDArray, size } from "./ndarray.ts";

/** Rows of the last axis: [rows, n]. */
function rowsOf(a: NDArray): [number, number] {
  const n = a.shape[a.rank - 1];
  return [n === 0 ? 0 : a.size / n, n];
}

/** y[r, o] = Σ_i x[r, i]·w[o, i] + b[o]: x [..., in], w [out, in], b [out] → [..., out]. */
export function linearRef(x: NDArray, w: NDArray, b?: NDArray): NDArray {
  const [rows, nIn] = rowsOf(x);
  const nOut = w.shape[0];
  const out = new Float64Array(rows * nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      let s = b ? b.data[o] : 0;
      for (let i = 0; i < nIn; i++) s += x.data[r * nIn + i] * w.data[o * nIn + i];
      out[r * nOut + o] = s;
    }
  }
  return new NDArray(out, [...x.shape.slice(0, -1), nOut]);
}

/** Vjp of linearRef: dx = g w, dw = gᵀ x, db = Σ_rows g. */
export function linearVjp(
  x: NDArray,
  w: NDArray,
  g: NDArray,
): { dx: NDArray; dw: NDArray; db: NDArray } {
  const [rows, nIn] = rowsOf(x);
  const nOut = w.shape[0];
  const dx = new Float64Array(x.size);
  const dw = new Float64Array(w.size);
  const db = new Float64Array(nOut);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nOut; o++) {
      const gv = g.data[r * nOut + o];
      db[o] += gv;
      for (let i = 0; i < nIn; i++) {
        dx[r * nIn + i] += gv * w.data[o * nIn + i];
        dw[o * nIn + i] += gv * x.data[r * nIn + i];
      }
    }
  }
  return {
    dx: new NDArray(dx, x.shape),
    dw: new NDArray(dw, w.shape),
    db: new NDArray(db, [nOut]),
  };
}

/** y = x · (mean(x²) + eps)^(−1/2) · g over the last axis. */
export function rmsNormRef(x: NDArray, g: NDArray, eps: number): NDArray {
  const [rows, n] = rowsOf(x);
  const out = new Float64Array(x.size);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < n; j++) ss += x.data[r * n + j] ** 2;
    const rs = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) out[r * n + j] = x.data[r * n + j] * rs * g.data[j];
  }
  return new NDArray(out, x.shape);
}

/** Vjp of rmsNormRef: dx = r·g·dy − x·r³/n·Σ(dy·g·x), dg = Σ_rows dy·x·r. */
export function rmsNormVjp(
  x: NDArray,
  g: NDArray,
  eps: number,
  dy: NDArray,
): { dx: NDArray; dg: NDArray } {
  const [rows, n] = rowsOf(x);
  const dx = new Float64Array(x.size);
  const dg = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    let dot = 0;
    for (let j = 0; j < n; j++) {
      const v = x.data[r * n + j];
      ss += v * v;
      dot += dy.data[r * n + j] * g.data[j] * v;
    }
    const rs = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) {
      const i = r * n + j;
      dx[i] = rs * g.data[j] * dy.data[i] - x.data[i] * rs ** 3 * dot / n;
      dg[j] += dy.data[i] * x.data[i] * rs;
    }
  }
  return { dx: new NDArray(dx, x.shape), dg: new NDArray(dg, [n]) };
}

/** θ^(−2i/d) rounded to f32, the table both the GPU op and HF use. */
export function invFreqRef(d: number, theta: number): number[] {
  return Array.from({ length: d / 2 }, (_, i) => Math.fround(Math.pow(theta, (-2 * i) / d)));
}

/**
 * Rotary parameters in config.json's snake_case (the shape of the library's RopeParameters,
 * restated here so the reference does not import the library).
 */
export type RopeRef =
  | { rope_type: "default"; rope_theta: number }
  | {
    rope_type: "yarn";
    rope_theta: number;
    factor: number;
    original_max_position_embeddings: number;
    beta_fast: number;
    beta_slow: number;
    mscale: number | null;
    mscale_all_dim: number | null;
    attention_factor: number | null;
    truncate: boolean;
  };

type YarnRef = Extract<RopeRef, { rope_type: "yarn" }>;

/** YaRN's m(s, μ) = 0.1·μ·ln s + 1 (1 when s ≤ 1). */
export function mscaleRef(s: number, mu: number): number {
  return s > 1 ? 1 + mu * Math.log(s) / 10 : 1;
}

/**
 * The fractional pair index at which a rotary pair turns exactly `rotations` times over the
 * original context L: pair i has wavelength 2π·θ^(2i/d), so it turns L / (2π·θ^(2i/d)) times;
 * solving for i gives (d/2)·log_θ(L / (2π·rotations)).
 */
function pairIndexForRotations(d: number, y: YarnRef, rotations: number): number {
  const L = y.original_max_position_embeddings;
  return (d / 2) * (Math.log(L / (2 * Math.PI * rotations)) / Math.log(y.rope_theta));
}

/**
 * YaRN's inv_freq in float64 (NOT rounded), restated from HF's semantics: the pairs that turn
 * more than beta_fast times over L keep θ_i = θ^(−2i/d), those that turn fewer than beta_slow
 * times are divided by the factor s, and between the two (pair indices floored / ceiled when
 * `truncate`, clamped to [0, d − 1], a zero-width range widened by 0.001) the division blends
 * in linearly: inv_i = θ_i·(1 − w_i·(1 − 1/s)), w_i the clamped ramp.
 */
export function yarnInvFreq64(d: number, y: YarnRef): number[] {
  let lo = pairIndexForRotations(d, y, y.beta_fast);
  let hi = pairIndexForRotations(d, y, y.beta_slow);
  if (y.truncate) [lo, hi] = [Math.floor(lo), Math.ceil(hi)];
  lo = lo < 0 ? 0 : lo;
  hi = hi > d - 1 ? d - 1 : hi;
  if (hi === lo) hi = lo + 0.001;
  return Array.from({ length: d / 2 }, (_, i) => {
    const w = Math.min(1, Math.max(0, (i - lo) / (hi - lo)));
    return Math.pow(y.rope_theta, (-2 * i) / d) * (1 - w * (1 - 1 / y.factor));
  });
}

/** YaRN's cos/sin factor: explicit, else m(s, mscale)/m(s, mscale_all_dim) if both set, else m(s, 1). */
export function yarnAttentionFactorRef(y: YarnRef): number {
  if (y.attention_factor !== null) return y.attention_factor;
  const both = (y.mscale ?? 0) !== 0 && (y.mscale_all_dim ?? 0) !== 0;
  return both
    ? mscaleRef(y.factor, y.mscale!) / mscaleRef(y.factor, y.mscale_all_dim!)
    : mscaleRef(y.factor, 1);
}

/** The f32 inv_freq table, the cos/sin factor and the softmax-scale multiplier of a rope. */
export function ropeTablesRef(
  d: number,
  rope: RopeRef,
): { inv: number[]; factor: number; softmax: number } {
  if (rope.rope_type === "default") {
    return { inv: invFreqRef(d, rope.rope_theta), factor: 1, softmax: 1 };
  }
  const m = (rope.mscale_all_dim ?? 0) !== 0 ? mscaleRef(rope.factor, rope.mscale_all_dim!) : 1;
  return {
    inv: yarnInvFreq64(d, rope).map(Math.fround),
    factor: yarnAttentionFactorRef(rope),
    softmax: m * m,
  };
}

/** Pair layout and cos/sin factor of `ropeRef`. */
export interface RopeRefOptions {
  /** Interleaved pairs (2i, 2i+1) (default) or half-split pairs (i, i + d/2). */
  interleaved?: boolean;
  /** Factor multiplying cos and sin (default 1). */
  attentionFactor?: number;
}

/**
 * RoPE: pair i of row r — (x[2i], x[2i+1]) interleaved, (x[i], x[i+d/2]) half-split — rotates
 * by angle fround(pos[r]·invFreq[i]) (the f32 product HF computes), times `sign` (−1 undoes
 * it), and is scaled by the attention factor. `pos` gives one position per row of x (leading
 * axes flattened). Output in the input's layout.
 */
export function ropeRef(
  x: NDArray,
  pos: ArrayLike<number>,
  invFreq: readonly number[],
  sign = 1,
  options: RopeRefOptions = {},
): NDArray {
  const [rows, d] = rowsOf(x);
  const f = options.attentionFactor ?? 1;
  const inter = options.interleaved ?? true;
  const out = new Float64Array(x.size);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < d / 2; i++) {
      const a = sign * Math.fround(pos[r] * invFreq[i]);
      const c = Math.cos(a) * f;
      const s = Math.sin(a) * f;
      const ia = r * d + (inter ? 2 * i : i);
      const ib = r * d + (inter ? 2 * i + 1 : i + d / 2);
      const x0 = x.data[ia];
      const x1 = x.data[ib];
      out[ia] = x0 * c - x1 * s;
      out[ib] = x0 * s + x1 * c;
    }
  }
  return new NDArray(out, x.shape);
}

/** Vjp of ropeRef: the transpose of f·rotation is f·(rotation by −angle). */
export function ropeVjp(
  g: NDArray,
  pos: ArrayLike<number>,
  invFreq: readonly number[],
  options: RopeRefOptions = {},
): NDArray {
  return ropeRef(g, pos, invFreq, -1, options);
}

/**
 * HF DeepseekV3's rotary application written literally, per row: cos/sin tables
 * cat(freqs, freqs) times the factor, `rotate_half(v) = cat(−v[d/2:], v[:d/2])`, and
 * v·cos + rotate_half(v)·sin, where v is x itself (rope_interleave false, `apply_rotary_pos_emb`)
 * or x de-interleaved to [x0, x2, …, x1, x3, …] (true, `apply_rotary_pos_emb_interleave`),
 * whose output stays de-interleaved. Used to pin `ropeRef`'s layouts to HF's formulas.
 */
export function ropeHfLiteral(
  x: NDArray,
  pos: ArrayLike<number>,
  invFreq: readonly number[],
  interleave: boolean,
  factor = 1,
): NDArray {
  const [rows, d] = rowsOf(x);
  const h = d / 2;
  const out = new Float64Array(x.size);
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: d }, (_, j) => x.data[r * d + j]);
    const v = interleave
      ? [...row.filter((_, j) => j % 2 === 0), ...row.filter((_, j) => j % 2 === 1)]
      : row;
    const rot = [...v.slice(h).map((e) => -e), ...v.slice(0, h)];
    for (let j = 0; j < d; j++) {
      const a = Math.fround(pos[r] * invFreq[j % h]);
      out[r * d + j] = v[j] * Math.cos(a) * factor + rot[j] * Math.sin(a) * factor;
    }
  }
  return new NDArray(out, x.shape);
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** SwiGLU MLP: down(silu(x gateᵀ) ⊙ (x upᵀ)); gate/up [I, H], down [H, I]. */
export function mlpRef(x: NDArray, wg: NDArray, wu: NDArray, wd: NDArray): NDArray {
  const a = linearRef(x, wg);
  const u = linearRef(x, wu);
  const h = new NDArray(a.data.map((v, i) => v * sigmoid(v) * u.data[i]), a.shape);
  return linearRef(h, wd);
}

/** Vjp of mlpRef for x and the three weights. */
export function mlpVjp(
  x: NDArray,
  wg: NDArray,
  wu: NDArray,
  wd: NDArray,
  dy: NDArray,
): { dx: NDArray; dwg: NDArray; dwu: NDArray; dwd: NDArray } {
  const a = linearRef(x, wg);
  const u = linearRef(x, wu);
  const h = new NDArray(a.data.map((v, i) => v * sigmoid(v) * u.data[i]), a.shape);
  const down = linearVjp(h, wd, dy);
  const dh = down.dx.data;
  const da = new NDArray(
    a.data.map((v, i) => {
      const s = sigmoid(v);
      return dh[i] * u.data[i] * (s + v * s * (1 - s));
    }),
    a.shape,
  );
  const du = new NDArray(a.data.map((v, i) => dh[i] * v * sigmoid(v)), a.shape);
  const gate = linearVjp(x, wg, da);
  const up = linearVjp(x, wu, du);
  const dx = new NDArray(gate.dx.data.map((v, i) => v + up.dx.data[i]), x.shape);
  return { dx, dwg: gate.dw, dwu: up.dw, dwd: down.dw };
}

/** Number of elements of a shape (re-exported for tests). */
export { size };
