/**
 * Float64 reference optimizer steps (torch.optim semantics), on flat arrays. Each function
 * advances its state in place and returns nothing; the parameter array is updated in place.
 */
import { type Mat, nsRef } from "./linalg.ts";

/** SGD state and hyper-parameters. */
export interface SgdRef {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  buf: Float64Array | null;
}

/** One torch.optim.SGD step. */
export function sgdStepRef(p: Float64Array, g: ArrayLike<number>, s: SgdRef): void {
  const first = s.buf === null;
  if (s.momentum !== 0 && !s.buf) s.buf = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    let d = g[i] + s.weightDecay * p[i];
    if (s.momentum !== 0) {
      const b = first ? d : s.momentum * s.buf![i] + (1 - s.dampening) * d;
      s.buf![i] = b;
      d = s.nesterov ? d + s.momentum * b : b;
    }
    p[i] -= s.lr * d;
  }
}

/** AdamW state and hyper-parameters. */
export interface AdamWRef {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  t: number;
  m: Float64Array;
  v: Float64Array;
}

/** One torch.optim.AdamW step. */
export function adamwStepRef(p: Float64Array, g: ArrayLike<number>, s: AdamWRef): void {
  s.t++;
  const bc1 = 1 - s.beta1 ** s.t;
  const bc2 = 1 - s.beta2 ** s.t;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - s.lr * s.weightDecay;
    s.m[i] = s.beta1 * s.m[i] + (1 - s.beta1) * g[i];
    s.v[i] = s.beta2 * s.v[i] + (1 - s.beta2) * g[i] * g[i];
    p[i] -= (s.lr / bc1) * s.m[i] / (Math.sqrt(s.v[i] / bc2) + s.eps);
  }
}

/** Muon state and hyper-parameters for one [A, B] matrix. */
export interface MuonRef {
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  scale: number;
  schedule: readonly (readonly number[])[];
  m: Float64Array;
}

/** One Muon step (REFERENCE §2) on an A×B matrix; returns the scaled update O. */
export function muonStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  A: number,
  B: number,
  s: MuonRef,
): Float64Array {
  const u = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    s.m[i] = s.momentum * s.m[i] + g[i];
    u[i] = s.nesterov ? g[i] + s.momentum * s.m[i] : s.m[i];
  }
  const o: Mat = nsRef({ m: A, n: B, a: u }, s.schedule);
  const out = new Float64Array(p.length);
  for (let i = 0; i < p.length; i++) {
    out[i] = o.a[i] * s.scale;
    p[i] -= s.lr * (out[i] + s.weightDecay * p[i]);
  }
  return out;
}
