/**
 * Float64 reference of Multi-head Latent Attention (REFERENCE §4, HF DeepseekV3Attention):
 * the expanded training forward, its analytic vjp for x and every weight, and the absorbed
 * decode formulation (kv_b_proj folded into q and o), built from the Linear / RMSNorm / RoPE /
 * attention references. Weights are keyed by their HF parameter names
 * ("q_a_proj.weight", "kv_b_proj.weight", ...) in HF layouts (Linear weight [out, in]). With
 * `bias` (HF `attention_bias`), q_a_proj, kv_a_proj_with_mqa and o_proj carry a ".bias" as in
 * HF DeepseekV3Attention; q_proj, q_b_proj and kv_b_proj never do. The rotary embedding is
 * plain RoPE with `theta`, or `rope` (YaRN: its f32 inv_freq table and cos/sin factor from
 * nn.ts's float64 references, and the softmax scale d_qk^−0.5·m(s, mscale_all_dim)²), in the
 * interleaved (default) or half-split pair layout (`interleave: false`).
 */
import { attentionRef, attentionVjp } from "./attention.ts";
import { NDArray } from "./ndarray.ts";
import {
  linearRef,
  linearVjp,
  rmsNormRef,
  rmsNormVjp,
  type RopeRef,
  ropeRef,
  type RopeRefOptions,
  ropeTablesRef,
  ropeVjp,
} from "./nn.ts";

/** The sizes of one MLA layer (REFERENCE §4 notation). */
export interface MlaDims {
  /** Heads H. */
  H: number;
  /** q_lora_rank, or null for a plain q_proj. */
  rq: number | null;
  /** kv_lora_rank. */
  rkv: number;
  /** qk_nope_head_dim. */
  dn: number;
  /** qk_rope_head_dim. */
  dr: number;
  /** v_head_dim. */
  dv: number;
  /** rope_theta. */
  theta: number;
  /** attention_bias: biases on q_a_proj, kv_a_proj_with_mqa and o_proj (default false). */
  bias?: boolean;
  /** Rotary parameters (overrides `theta`; e.g. YaRN); default plain RoPE with `theta`. */
  rope?: RopeRef;
  /** rope_interleave: interleaved pairs (default true) or half-split pairs (false). */
  interleave?: boolean;
}

/** The inv_freq table, the rope options and the softmax scale of a layer. */
function rotary(z: MlaDims): { inv: number[]; opts: RopeRefOptions; scale: number } {
  const t = ropeTablesRef(z.dr, z.rope ?? { rope_type: "default", rope_theta: z.theta });
  return {
    inv: t.inv,
    opts: { interleaved: z.interleave ?? true, attentionFactor: t.factor },
    scale: t.softmax / Math.sqrt(z.dn + z.dr),
  };
}

/** Weights by HF name. */
export type MlaWeights = Record<string, NDArray>;

/** The inner norms' fixed epsilon. */
export const MLA_NORM_EPS = 1e-6;

/** Parameter names (HF) of a layer with these dims, in HF registration order. */
export function mlaParamNames(z: MlaDims): string[] {
  const b = (name: string) => (z.bias ? [`${name}.weight`, `${name}.bias`] : [`${name}.weight`]);
  const q = z.rq === null
    ? ["q_proj.weight"]
    : [...b("q_a_proj"), "q_a_layernorm.weight", "q_b_proj.weight"];
  return [
    ...q,
    ...b("kv_a_proj_with_mqa"),
    "kv_a_layernorm.weight",
    "kv_b_proj.weight",
    ...b("o_proj"),
  ];
}

/** Shape of each parameter (HF layouts) for model width D. */
export function mlaParamShapes(z: MlaDims, D: number): Record<string, number[]> {
  const dqk = z.dn + z.dr;
  const s: Record<string, number[]> = {
    "kv_a_proj_with_mqa.weight": [z.rkv + z.dr, D],
    "kv_a_layernorm.weight": [z.rkv],
    "kv_b_proj.weight": [z.H * (z.dn + z.dv), z.rkv],
    "o_proj.weight": [D, z.H * z.dv],
  };
  if (z.rq === null) s["q_proj.weight"] = [z.H * dqk, D];
  else {
    s["q_a_proj.weight"] = [z.rq, D];
    s["q_a_layernorm.weight"] = [z.rq];
    s["q_b_proj.weight"] = [z.H * dqk, z.rq];
  }
  if (z.bias) {
    if (z.rq !== null) s["q_a_proj.bias"] = [z.rq];
    s["kv_a_proj_with_mqa.bias"] = [z.rkv + z.dr];
    s["o_proj.bias"] = [D];
  }
  return s;
}

/** Columns [start, start+len) of the last axis of a [..., W] array. */
function cols(a: NDArray, start: number, len: number): NDArray {
  const W = a.shape[a.rank - 1];
  const rows = a.size / W;
  const out = new Float64Array(rows * len);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < len; j++) out[r * len + j] = a.data[r * W + start + j];
  }
  return new NDArray(out, [...a.shape.slice(0, -1), len]);
}

/** Joins [..., a] and [..., b] along the last axis. */
function catCols(a: NDArray, b: NDArray): NDArray {
  const wa = a.shape[a.rank - 1];
  const wb = b.shape[b.rank - 1];
  const rows = a.size / wa;
  const out = new Float64Array(rows * (wa + wb));
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < wa; j++) out[r * (wa + wb) + j] = a.data[r * wa + j];
    for (let j = 0; j < wb; j++) out[r * (wa + wb) + wa + j] = b.data[r * wb + j];
  }
  return new NDArray(out, [...a.shape.slice(0, -1), wa + wb]);
}

/** [B, T, H·w] → [B, H, T, len]: columns [start, start+len) of each head's w-wide block. */
function heads(a: NDArray, H: number, w: number, start: number, len: number): NDArray {
  const [B, T] = a.shape;
  const out = new Float64Array(B * H * T * len);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < len; j++) {
          out[((b * H + h) * T + t) * len + j] = a.data[(b * T + t) * H * w + h * w + start + j];
        }
      }
    }
  }
  return new NDArray(out, [B, H, T, len]);
}

/** Adds src [B, H, T, len] into columns [start, start+len) of each head block of dst [B, T, H·w]. */
function addHeads(dst: Float64Array, src: NDArray, w: number, start: number): void {
  const [B, H, T, len] = src.shape;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < len; j++) {
          dst[(b * T + t) * H * w + h * w + start + j] += src.data[((b * H + h) * T + t) * len + j];
        }
      }
    }
  }
}

/** [B, T, d] → [B, H, T, d] (the shared key broadcast over heads). */
function broadcastHeads(a: NDArray, H: number): NDArray {
  const [B, T, d] = a.shape;
  const out = new Float64Array(B * H * T * d);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      out.set(a.data.subarray(b * T * d, (b + 1) * T * d), (b * H + h) * T * d);
    }
  }
  return new NDArray(out, [B, H, T, d]);
}

/** [B, H, T, d] → [B, T, d] summed over heads (vjp of broadcastHeads). */
function sumHeads(a: NDArray): NDArray {
  const [B, H, T, d] = a.shape;
  const out = new Float64Array(B * T * d);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T * d; i++) out[b * T * d + i] += a.data[(b * H + h) * T * d + i];
    }
  }
  return new NDArray(out, [B, T, d]);
}

/** [B, H, T, d] → [B, T, H·d]. */
function mergeHeads(a: NDArray): NDArray {
  const [B, H, T, d] = a.shape;
  const out = new Float64Array(a.size);
  addHeads(out, a, d, 0);
  return new NDArray(out, [B, T, H * d]);
}

/** Positions of the rows of a [..., T, d] array flattened: offset + (row mod T). */
function positions(a: NDArray, offset: number): number[] {
  const T = a.shape[a.rank - 2];
  const rows = a.size / a.shape[a.rank - 1];
  return Array.from({ length: rows }, (_, r) => offset + (r % T));
}

/** Everything the forward computes, kept for the vjp. */
interface Trace {
  qa?: NDArray;
  qan?: NDArray;
  q: NDArray;
  ckv: NDArray;
  c: NDArray;
  cn: NDArray;
  qf: NDArray;
  kf: NDArray;
  v: NDArray;
  attn: NDArray;
  merged: NDArray;
  maxLogits: number[];
  kRope: NDArray;
}

/** q [B, T, H·d_qk] from x. */
function queries(x: NDArray, w: MlaWeights): { q: NDArray; qa?: NDArray; qan?: NDArray } {
  if (w["q_proj.weight"]) return { q: linearRef(x, w["q_proj.weight"]) };
  const qa = linearRef(x, w["q_a_proj.weight"], w["q_a_proj.bias"]);
  const qan = rmsNormRef(qa, w["q_a_layernorm.weight"], MLA_NORM_EPS);
  return { q: linearRef(qan, w["q_b_proj.weight"]), qa, qan };
}

function trace(x: NDArray, w: MlaWeights, z: MlaDims, offset: number): Trace {
  const dqk = z.dn + z.dr;
  const { inv, opts, scale } = rotary(z);
  const { q, qa, qan } = queries(x, w);
  const qNope = heads(q, z.H, dqk, 0, z.dn);
  const qRopeRaw = heads(q, z.H, dqk, z.dn, z.dr);
  const qRope = ropeRef(qRopeRaw, positions(qRopeRaw, offset), inv, 1, opts);
  const ckv = linearRef(x, w["kv_a_proj_with_mqa.weight"], w["kv_a_proj_with_mqa.bias"]);
  const c = cols(ckv, 0, z.rkv);
  const kRopeRaw = cols(ckv, z.rkv, z.dr);
  const kRope = ropeRef(kRopeRaw, positions(kRopeRaw, offset), inv, 1, opts);
  const cn = rmsNormRef(c, w["kv_a_layernorm.weight"], MLA_NORM_EPS);
  const kv = linearRef(cn, w["kv_b_proj.weight"]);
  const kNope = heads(kv, z.H, z.dn + z.dv, 0, z.dn);
  const v = heads(kv, z.H, z.dn + z.dv, z.dn, z.dv);
  const qf = catCols(qNope, qRope);
  const kf = catCols(kNope, broadcastHeads(kRope, z.H));
  const { out: attn, maxLogits } = attentionRef(qf, kf, v, { scale, causal: true });
  const merged = mergeHeads(attn);
  return { qa, qan, q, ckv, c, cn, qf, kf, v, attn, merged, maxLogits, kRope };
}

/**
 * The layer's forward on x [B, T, D] (positions offset..offset+T−1, causal among the T
 * tokens): out [B, T, D], the per-head max pre-softmax logit [H], and the latents a decode
 * cache would hold: c (after kv_a_layernorm) [B, T, r_kv] and the rotated k_rope [B, T, d_r].
 */
export function mlaRef(
  x: NDArray,
  w: MlaWeights,
  z: MlaDims,
  offset = 0,
): { out: NDArray; maxLogits: number[]; c: NDArray; kRope: NDArray } {
  const t = trace(x, w, z, offset);
  return {
    out: linearRef(t.merged, w["o_proj.weight"], w["o_proj.bias"]),
    maxLogits: t.maxLogits,
    c: t.cn,
    kRope: t.kRope,
  };
}

/**
 * Analytic vjp of `mlaRef().out` with upstream gradient g [B, T, D]: dx and the gradient of
 * every weight (keyed like `w`), chaining the vjps of linear, rmsNorm, rope and attention.
 */
export function mlaVjp(
  x: NDArray,
  w: MlaWeights,
  z: MlaDims,
  g: NDArray,
  offset = 0,
): { dx: NDArray; grads: MlaWeights } {
  const dqk = z.dn + z.dr;
  const { inv, opts, scale } = rotary(z);
  const t = trace(x, w, z, offset);
  const grads: MlaWeights = {};
  const o = linearVjp(t.merged, w["o_proj.weight"], g);
  grads["o_proj.weight"] = o.dw;
  if (w["o_proj.bias"]) grads["o_proj.bias"] = o.db;
  const dAttn = heads(o.dx, z.H, z.dv, 0, z.dv);
  const a = attentionVjp(t.qf, t.kf, t.v, dAttn, { scale, causal: true });
  // Queries.
  const dqRopeRot = cols(a.dq, z.dn, z.dr);
  const dqRope = ropeVjp(dqRopeRot, positions(dqRopeRot, offset), inv, opts);
  const dq = new Float64Array(t.q.size);
  addHeads(dq, cols(a.dq, 0, z.dn), dqk, 0);
  addHeads(dq, dqRope, dqk, z.dn);
  const dqN = new NDArray(dq, t.q.shape);
  let dx: Float64Array;
  if (w["q_proj.weight"]) {
    const l = linearVjp(x, w["q_proj.weight"], dqN);
    grads["q_proj.weight"] = l.dw;
    dx = Float64Array.from(l.dx.data);
  } else {
    const lb = linearVjp(t.qan!, w["q_b_proj.weight"], dqN);
    grads["q_b_proj.weight"] = lb.dw;
    const n = rmsNormVjp(t.qa!, w["q_a_layernorm.weight"], MLA_NORM_EPS, lb.dx);
    grads["q_a_layernorm.weight"] = n.dg;
    const la = linearVjp(x, w["q_a_proj.weight"], n.dx);
    grads["q_a_proj.weight"] = la.dw;
    if (w["q_a_proj.bias"]) grads["q_a_proj.bias"] = la.db;
    dx = Float64Array.from(la.dx.data);
  }
  // Keys and values.
  const dkv = new Float64Array(t.cn.size / z.rkv * z.H * (z.dn + z.dv));
  addHeads(dkv, cols(a.dk, 0, z.dn), z.dn + z.dv, 0);
  addHeads(dkv, a.dv, z.dn + z.dv, z.dn);
  const kvShape = [...t.cn.shape.slice(0, -1), z.H * (z.dn + z.dv)];
  const lkv = linearVjp(t.cn, w["kv_b_proj.weight"], new NDArray(dkv, kvShape));
  grads["kv_b_proj.weight"] = lkv.dw;
  const nkv = rmsNormVjp(t.c, w["kv_a_layernorm.weight"], MLA_NORM_EPS, lkv.dx);
  grads["kv_a_layernorm.weight"] = nkv.dg;
  const dkRopeRot = sumHeads(cols(a.dk, z.dn, z.dr));
  const dkRope = ropeVjp(dkRopeRot, positions(dkRopeRot, offset), inv, opts);
  const la = linearVjp(x, w["kv_a_proj_with_mqa.weight"], catCols(nkv.dx, dkRope));
  grads["kv_a_proj_with_mqa.weight"] = la.dw;
  if (w["kv_a_proj_with_mqa.bias"]) grads["kv_a_proj_with_mqa.bias"] = la.db;
  for (let i = 0; i < dx.length; i++) dx[i] += la.dx.data[i];
  return { dx: new NDArray(dx, x.shape), grads };
}

/**
 * The absorbed computation of REFERENCE §4 on the same inputs (causal over the sequence):
 * with W = kv_b_proj viewed [H, d_n + d_v, r_kv], q_abs_h = W_UK_hᵀ q_nope_h (length r_kv),
 * score = (q_abs·c + q_rope·k_rope)·scale, o_h = W_UV_h Σ softmax·c, then o_proj. Written
 * independently of `mlaRef` (no k_nope or v is ever formed), so their agreement checks the
 * algebra.
 */
export function mlaAbsorbedRef(x: NDArray, w: MlaWeights, z: MlaDims, offset = 0): NDArray {
  const [B, T] = x.shape;
  const dqk = z.dn + z.dr;
  const { inv, opts, scale } = rotary(z);
  const { q } = queries(x, w);
  const qNope = heads(q, z.H, dqk, 0, z.dn);
  const qRopeRaw = heads(q, z.H, dqk, z.dn, z.dr);
  const qRope = ropeRef(qRopeRaw, positions(qRopeRaw, offset), inv, 1, opts);
  const ckv = linearRef(x, w["kv_a_proj_with_mqa.weight"], w["kv_a_proj_with_mqa.bias"]);
  const kRopeRaw = cols(ckv, z.rkv, z.dr);
  const kRope = ropeRef(kRopeRaw, positions(kRopeRaw, offset), inv, 1, opts);
  const c = rmsNormRef(cols(ckv, 0, z.rkv), w["kv_a_layernorm.weight"], MLA_NORM_EPS);
  const W = w["kv_b_proj.weight"].data; // [H·(dn+dv), rkv]
  const wRow = (h: number, j: number) => (h * (z.dn + z.dv) + j) * z.rkv;
  const merged = new Float64Array(B * T * z.H * z.dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < z.H; h++) {
      for (let i = 0; i < T; i++) {
        const qi = (b * z.H + h) * T + i;
        const qAbs = new Float64Array(z.rkv);
        for (let d = 0; d < z.dn; d++) {
          const qv = qNope.data[qi * z.dn + d];
          for (let r = 0; r < z.rkv; r++) qAbs[r] += qv * W[wRow(h, d) + r];
        }
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let v = 0;
          for (let r = 0; r < z.rkv; r++) v += qAbs[r] * c.data[(b * T + j) * z.rkv + r];
          for (let d = 0; d < z.dr; d++) {
            v += qRope.data[qi * z.dr + d] * kRope.data[(b * T + j) * z.dr + d];
          }
          s.push(v * scale);
        }
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const tot = e.reduce((acc, v) => acc + v, 0);
        const lat = new Float64Array(z.rkv);
        for (let j = 0; j <= i; j++) {
          for (let r = 0; r < z.rkv; r++) lat[r] += (e[j] / tot) * c.data[(b * T + j) * z.rkv + r];
        }
        for (let d = 0; d < z.dv; d++) {
          let v = 0;
          for (let r = 0; r < z.rkv; r++) v += W[wRow(h, z.dn + d) + r] * lat[r];
          merged[(b * T + i) * z.H * z.dv + h * z.dv + d] = v;
        }
      }
    }
  }
  return linearRef(new NDArray(merged, [B, T, z.H * z.dv]), w["o_proj.weight"], w["o_proj.bias"]);
}

/**
 * Every causal pre-softmax logit of each head, (q_i·k_j)·scale for j ≤ i over the batch,
 * as `logits[h]` (flat list), with `magnitude[h]` = Σ_e |q_ie·k_je|·scale, the scale that
 * bounds their f32 rounding. Used by the QK-Clip tests.
 */
export function mlaLogits(
  x: NDArray,
  w: MlaWeights,
  z: MlaDims,
  offset = 0,
): { logits: number[][]; magnitude: number[][] } {
  const t = trace(x, w, z, offset);
  const [B, H, T, d] = t.qf.shape;
  const { scale } = rotary(z);
  const logits: number[][] = Array.from({ length: H }, () => []);
  const magnitude: number[][] = Array.from({ length: H }, () => []);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let j = 0; j <= i; j++) {
          let s = 0;
          let m = 0;
          for (let e = 0; e < d; e++) {
            const p = t.qf.at(b, h, i, e) * t.kf.at(b, h, j, e);
            s += p;
            m += Math.abs(p);
          }
          logits[h].push(s * scale);
          magnitude[h].push(m * scale);
        }
      }
    }
  }
  return { logits, magnitude };
}
