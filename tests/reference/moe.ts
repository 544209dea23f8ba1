/**
 * Float64 reference of the DeepSeekMoE block (REFERENCE §5, HF DeepseekV3MoE), written as
 * plain per-token loops: the router, top-k with the correction bias, the renormalised scaled
 * weights, SwiGLU experts, shared experts, the grouped matmul and the sequence-wise aux loss.
 */

/** Weights of a MoE block, flat row-major float64 (HF layouts: Linear weights are [out, in]). */
export interface MoeRefWeights {
  /** Model width D. */
  d: number;
  /** Experts E. */
  e: number;
  /** Experts per token K. */
  k: number;
  /** Expert width I. */
  i: number;
  /** Shared-expert width (I · n_shared), 0 for none. */
  is: number;
  /** routed_scaling_factor. */
  scale: number;
  /** norm_topk_prob. */
  normalize: boolean;
  /** Group-limited routing (default none). */
  groups?: RefGroups;
  /** Router weight [E, D]. */
  gate: Float64Array;
  /** e_score_correction_bias [E]. */
  bias: Float64Array;
  /** Stacked expert weights: gate/up [E, I, D], down [E, D, I]. */
  wg: Float64Array;
  /** Stacked up projections [E, I, D]. */
  wu: Float64Array;
  /** Stacked down projections [E, D, I]. */
  wd: Float64Array;
  /** Shared expert gate/up [Is, D] and down [D, Is] (empty when is = 0). */
  sg: Float64Array;
  /** Shared up [Is, D]. */
  su: Float64Array;
  /** Shared down [D, Is]. */
  sd: Float64Array;
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
const silu = (v: number) => v * sigmoid(v);

/** Router scores s = sigmoid(x · gateᵀ), [N, E]. */
export function refScores(x: Float64Array, w: MoeRefWeights): Float64Array {
  const n = x.length / w.d;
  const s = new Float64Array(n * w.e);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < w.e; j++) {
      let acc = 0;
      for (let c = 0; c < w.d; c++) acc += x[t * w.d + c] * w.gate[j * w.d + c];
      s[t * w.e + j] = sigmoid(acc);
    }
  }
  return s;
}

/** Group-limited routing (HF n_group / topk_group); nGroup 1 or topkGroup = nGroup: none. */
export interface RefGroups {
  /** n_group. */
  nGroup: number;
  /** topk_group. */
  topkGroup: number;
}

/**
 * The per-expert selection keys of one token, as HF DeepseekV3MoE.route_tokens_to_experts
 * forms them: c = s + bias; with a group limit, each group of E / nGroup consecutive experts
 * scores (largest c) + (second largest c), the topkGroup best groups are kept (ties: lower
 * group index first), and every expert of another group gets key 0 (HF's masked_fill(…, 0.0)).
 * With `f32` the two additions are rounded to float32 (Math.fround), as the GPU computes them,
 * so the keys (and so the selection, ties included) are bit-comparable.
 */
export function refRouteKeys(
  s: ArrayLike<number>,
  bias: ArrayLike<number>,
  groups: RefGroups = { nGroup: 1, topkGroup: 1 },
  f32 = false,
): number[] {
  const e = s.length;
  const r = f32 ? Math.fround : (v: number) => v;
  const c = Array.from({ length: e }, (_, j) => r(s[j] + bias[j]));
  const { nGroup: ng, topkGroup: kg } = groups;
  if (kg >= ng) return c;
  const gs = e / ng;
  const score = Array.from({ length: ng }, (_, g) => {
    const top = c.slice(g * gs, (g + 1) * gs).sort((a, b) => b - a);
    return r(top[0] + top[1]);
  });
  const order = Array.from({ length: ng }, (_, g) => g).sort((a, b) =>
    score[b] - score[a] || a - b
  );
  const kept = new Set(order.slice(0, kg));
  return c.map((v, j) => (kept.has(Math.floor(j / gs)) ? v : 0));
}

/**
 * Top-k of s + bias per token (ties: lower index first), optionally group-limited (see
 * `refRouteKeys`), and the weights from the unbiased s.
 */
export function refRoute(
  s: Float64Array,
  bias: Float64Array,
  e: number,
  k: number,
  scale: number,
  normalize: boolean,
  groups?: RefGroups,
  f32 = false,
): { idx: Int32Array; w: Float64Array } {
  const n = s.length / e;
  const idx = new Int32Array(n * k);
  const wt = new Float64Array(n * k);
  for (let t = 0; t < n; t++) {
    const keys = groups || f32
      ? refRouteKeys(s.subarray(t * e, (t + 1) * e), bias, groups, f32)
      : Array.from({ length: e }, (_, j) => s[t * e + j] + bias[j]);
    const order = Array.from({ length: e }, (_, j) => j).sort((a, b) => {
      const d = keys[b] - keys[a];
      return d !== 0 ? d : a - b;
    });
    let total = 0;
    for (let j = 0; j < k; j++) {
      idx[t * k + j] = order[j];
      total += s[t * e + order[j]];
    }
    for (let j = 0; j < k; j++) {
      const v = s[t * e + order[j]];
      wt[t * k + j] = normalize ? (v / (total + 1e-20)) * scale : v * scale;
    }
  }
  return { idx, w: wt };
}

/** One SwiGLU expert on one row: down(silu(gate x) ⊙ up x), weights at the given offsets. */
function swiglu(
  x: Float64Array,
  xo: number,
  d: number,
  i: number,
  g: Float64Array,
  u: Float64Array,
  dn: Float64Array,
  go: number,
  doff: number,
  out: Float64Array,
  oo: number,
  coef: number,
): void {
  const h = new Float64Array(i);
  for (let r = 0; r < i; r++) {
    let a = 0, b = 0;
    for (let c = 0; c < d; c++) {
      a += g[go + r * d + c] * x[xo + c];
      b += u[go + r * d + c] * x[xo + c];
    }
    h[r] = silu(a) * b;
  }
  for (let c = 0; c < d; c++) {
    let acc = 0;
    for (let r = 0; r < i; r++) acc += dn[doff + c * i + r] * h[r];
    out[oo + c] += coef * acc;
  }
}

/** The MoE block on x [N, D]: output [N, D], selected experts, weights and per-expert load. */
export function refMoe(
  x: Float64Array,
  w: MoeRefWeights,
): { y: Float64Array; idx: Int32Array; weights: Float64Array; load: Int32Array } {
  const n = x.length / w.d;
  const s = refScores(x, w);
  const { idx, w: weights } = refRoute(s, w.bias, w.e, w.k, w.scale, w.normalize, w.groups);
  const y = new Float64Array(n * w.d);
  const load = new Int32Array(w.e);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < w.k; j++) {
      const ex = idx[t * w.k + j];
      load[ex]++;
      swiglu(
        x,
        t * w.d,
        w.d,
        w.i,
        w.wg,
        w.wu,
        w.wd,
        ex * w.i * w.d,
        ex * w.d * w.i,
        y,
        t * w.d,
        weights[t * w.k + j],
      );
    }
    if (w.is > 0) swiglu(x, t * w.d, w.d, w.is, w.sg, w.su, w.sd, 0, 0, y, t * w.d, 1);
  }
  return { y, idx, weights, load };
}

/**
 * The dense form: Σ over ALL experts of (s_e / Σ_all s) · scale · Expert_e(x) + shared(x).
 * Equals `refMoe` when K = E and the bias is zero (norm_topk_prob).
 */
export function refDenseMoe(x: Float64Array, w: MoeRefWeights): Float64Array {
  const n = x.length / w.d;
  const s = refScores(x, w);
  const y = new Float64Array(n * w.d);
  for (let t = 0; t < n; t++) {
    let total = 0;
    for (let ex = 0; ex < w.e; ex++) total += s[t * w.e + ex];
    for (let ex = 0; ex < w.e; ex++) {
      const coef = (s[t * w.e + ex] / total) * w.scale;
      swiglu(
        x,
        t * w.d,
        w.d,
        w.i,
        w.wg,
        w.wu,
        w.wd,
        ex * w.i * w.d,
        ex * w.d * w.i,
        y,
        t * w.d,
        coef,
      );
    }
    if (w.is > 0) swiglu(x, t * w.d, w.d, w.is, w.sg, w.su, w.sd, 0, 0, y, t * w.d, 1);
  }
  return y;
}

/**
 * Sequence-wise aux loss: α · mean_b Σ_i f_{b,i} P_{b,i}, f = (E/(K·T)) · count of pairs routed
 * to i in sequence b, P = mean over the sequence of s_i / Σ_j s_j (all experts).
 */
export function refAuxLoss(x: Float64Array, w: MoeRefWeights, b: number, alpha: number): number {
  const n = x.length / w.d;
  const t = n / b;
  const s = refScores(x, w);
  const { idx } = refRoute(s, w.bias, w.e, w.k, w.scale, w.normalize, w.groups);
  let loss = 0;
  for (let q = 0; q < b; q++) {
    const f = new Float64Array(w.e);
    const p = new Float64Array(w.e);
    for (let r = 0; r < t; r++) {
      const tok = q * t + r;
      for (let j = 0; j < w.k; j++) f[idx[tok * w.k + j]] += w.e / (w.k * t);
      let total = 0;
      for (let ex = 0; ex < w.e; ex++) total += s[tok * w.e + ex];
      for (let ex = 0; ex < w.e; ex++) p[ex] += s[tok * w.e + ex] / total / t;
    }
    for (let ex = 0; ex < w.e; ex++) loss += f[ex] * p[ex];
  }
  return (alpha * loss) / b;
}

/**
 * Grouped matmul: rows [offsets[e], offsets[e+1]) of a [M, In] times W[e]ᵀ, W [E, Out, In]
 * → [M, Out]; and its vjp for an upstream g [M, Out]: da [M, In], dW [E, Out, In].
 */
export function refGroupedMatmul(
  a: Float64Array,
  wt: Float64Array,
  offsets: readonly number[],
  inF: number,
  outF: number,
  g?: Float64Array,
): { y: Float64Array; da: Float64Array; dw: Float64Array } {
  const m = a.length / inF;
  const e = offsets.length - 1;
  const y = new Float64Array(m * outF);
  const da = new Float64Array(m * inF);
  const dw = new Float64Array(e * outF * inF);
  for (let ex = 0; ex < e; ex++) {
    for (let r = offsets[ex]; r < offsets[ex + 1]; r++) {
      for (let o = 0; o < outF; o++) {
        let acc = 0;
        for (let c = 0; c < inF; c++) acc += a[r * inF + c] * wt[(ex * outF + o) * inF + c];
        y[r * outF + o] = acc;
        if (g) {
          const gv = g[r * outF + o];
          for (let c = 0; c < inF; c++) {
            da[r * inF + c] += gv * wt[(ex * outF + o) * inF + c];
            dw[(ex * outF + o) * inF + c] += gv * a[r * inF + c];
          }
        }
      }
    }
  }
  return { y, da, dw };
}
