/**
 * Float64 references for the nn foundation: Linear, RMSNorm, interleaved RoPE and the SwiGLU
 * MLP, forward and vjp. Leading axes are flattened to rows; weights use HF layouts
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
 * Interleaved RoPE: pair (x[2i], x[2i+1]) of row r rotates by angle fround(pos[r]·invFreq[i])
 * (the f32 product HF computes), times `sign` (−1 undoes it). `pos` gives one position per
 * row of x (leading axes flattened).
 */
export function ropeRef(
  x: NDArray,
  pos: ArrayLike<number>,
  invFreq: readonly number[],
  sign = 1,
): NDArray {
  const [rows, d] = rowsOf(x);
  const out = new Float64Array(x.size);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < d / 2; i++) {
      const a = sign * Math.fround(pos[r] * invFreq[i]);
      const c = Math.cos(a);
      const s = Math.sin(a);
      const x0 = x.data[r * d + 2 * i];
      const x1 = x.data[r * d + 2 * i + 1];
      out[r * d + 2 * i] = x0 * c - x1 * s;
      out[r * d + 2 * i + 1] = x0 * s + x1 * c;
    }
  }
  return new NDArray(out, x.shape);
}

/** Vjp of ropeRef: the transpose of a rotation is the rotation by −angle. */
export function ropeVjp(
  g: NDArray,
  pos: ArrayLike<number>,
  invFreq: readonly number[],
): NDArray {
  return ropeRef(g, pos, invFreq, -1);
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
