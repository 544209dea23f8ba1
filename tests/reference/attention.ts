/**
 * Float64 reference of scaled-dot-product attention (explicit softmax over the masked logits),
 * its per-head max logit and its vjp. q [B, H, T, Dqk], k [B, Hk, S, Dqk], v [B, Hv, S, Dv];
 * Hk and Hv divide H and query head h uses kv head ⌊h / (H / Hk)⌋.
 */
import { NDArray } from "./ndarray.ts";

/** Options of the reference (all explicit). */
export interface AttentionRefOptions {
  /** Logit multiplier. */
  scale: number;
  /** Query i attends keys j ≤ i + (S − T) when true, every key otherwise. */
  causal: boolean;
}

interface Sizes {
  B: number;
  H: number;
  T: number;
  S: number;
  Dq: number;
  Dv: number;
  Hk: number;
  Hv: number;
}

function sizes(q: NDArray, k: NDArray, v: NDArray): Sizes {
  const [B, H, T, Dq] = q.shape;
  const [, Hk, S] = k.shape;
  const [, Hv, , Dv] = v.shape;
  return { B, H, T, S, Dq, Dv, Hk, Hv };
}

/** Flat index of [b, h, t, d] in a contiguous [B, heads, len, dim] array. */
function at(b: number, h: number, t: number, d: number, heads: number, len: number, dim: number) {
  return ((b * heads + h) * len + t) * dim + d;
}

/** Keys query i may attend: 0..limit (inclusive). */
function lastKey(i: number, z: Sizes, causal: boolean): number {
  return causal ? Math.min(z.S - 1, i + z.S - z.T) : z.S - 1;
}

/** The logits of row (b, h, i) over its attended keys, and the softmax of them. */
function row(
  q: NDArray,
  k: NDArray,
  z: Sizes,
  b: number,
  h: number,
  i: number,
  o: AttentionRefOptions,
) {
  const hk = Math.floor(h / (z.H / z.Hk));
  const n = lastKey(i, z, o.causal) + 1;
  const logits: number[] = [];
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let d = 0; d < z.Dq; d++) {
      s += q.data[at(b, h, i, d, z.H, z.T, z.Dq)] * k.data[at(b, hk, j, d, z.Hk, z.S, z.Dq)];
    }
    logits.push(s * o.scale);
  }
  const m = Math.max(...logits);
  const e = logits.map((x) => Math.exp(x - m));
  const tot = e.reduce((a, x) => a + x, 0);
  return { logits, p: e.map((x) => x / tot), max: m };
}

/** out [B, H, T, Dv] and maxLogits [H] (max over batch and attended pairs of the logit). */
export function attentionRef(
  q: NDArray,
  k: NDArray,
  v: NDArray,
  o: AttentionRefOptions,
): { out: NDArray; maxLogits: number[] } {
  const z = sizes(q, k, v);
  const out = new Float64Array(z.B * z.H * z.T * z.Dv);
  const maxLogits = new Array<number>(z.H).fill(-Infinity);
  for (let b = 0; b < z.B; b++) {
    for (let h = 0; h < z.H; h++) {
      const hv = Math.floor(h / (z.H / z.Hv));
      for (let i = 0; i < z.T; i++) {
        const { p, max } = row(q, k, z, b, h, i, o);
        maxLogits[h] = Math.max(maxLogits[h], max);
        for (let d = 0; d < z.Dv; d++) {
          let s = 0;
          for (let j = 0; j < p.length; j++) s += p[j] * v.data[at(b, hv, j, d, z.Hv, z.S, z.Dv)];
          out[at(b, h, i, d, z.H, z.T, z.Dv)] = s;
        }
      }
    }
  }
  return { out: new NDArray(out, [z.B, z.H, z.T, z.Dv]), maxLogits };
}

/**
 * vjp of `attentionRef().out` with upstream gradient g [B, H, T, Dv]:
 * dS = P ⊙ (dP − Σ_j P dP), dq = dS k · scale, dk = dSᵀ q · scale, dv = Pᵀ g, with dk and dv
 * summed over the query heads sharing a kv head.
 */
export function attentionVjp(
  q: NDArray,
  k: NDArray,
  v: NDArray,
  g: NDArray,
  o: AttentionRefOptions,
): { dq: NDArray; dk: NDArray; dv: NDArray } {
  const z = sizes(q, k, v);
  const dq = new Float64Array(q.size);
  const dk = new Float64Array(k.size);
  const dv = new Float64Array(v.size);
  for (let b = 0; b < z.B; b++) {
    for (let h = 0; h < z.H; h++) {
      const hk = Math.floor(h / (z.H / z.Hk));
      const hv = Math.floor(h / (z.H / z.Hv));
      for (let i = 0; i < z.T; i++) {
        const { p } = row(q, k, z, b, h, i, o);
        const dp = p.map((_, j) => {
          let s = 0;
          for (let d = 0; d < z.Dv; d++) {
            s += g.data[at(b, h, i, d, z.H, z.T, z.Dv)] * v.data[at(b, hv, j, d, z.Hv, z.S, z.Dv)];
          }
          return s;
        });
        const mean = p.reduce((a, pj, j) => a + pj * dp[j], 0);
        for (let j = 0; j < p.length; j++) {
          const ds = p[j] * (dp[j] - mean);
          for (let d = 0; d < z.Dq; d++) {
            dq[at(b, h, i, d, z.H, z.T, z.Dq)] += ds * k.data[at(b, hk, j, d, z.Hk, z.S, z.Dq)] *
              o.scale;
            dk[at(b, hk, j, d, z.Hk, z.S, z.Dq)] += ds * q.data[at(b, h, i, d, z.H, z.T, z.Dq)] *
              o.scale;
          }
          for (let d = 0; d < z.Dv; d++) {
            dv[at(b, hv, j, d, z.Hv, z.S, z.Dv)] += p[j] * g.data[at(b, h, i, d, z.H, z.T, z.Dv)];
          }
        }
      }
    }
  }
  return {
    dq: new NDArray(dq, q.shape),
    dk: new NDArray(dk, k.shape),
    dv: new NDArray(dv, v.shape),
  };
}
