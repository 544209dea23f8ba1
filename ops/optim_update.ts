/**
 * Fused optimizer updates: one elementwise dispatch per parameter for SGD (with momentum,
 * dampening, Nesterov and coupled weight decay) and AdamW (decoupled decay, host-precomputed
 * bias corrections). Parameters, gradients and state are
 * read and written in place through their offsets; hyper-parameters travel as kernel
 * parameters, so changing a learning rate never compiles a new pipeline.
 *
 * Cost: memory-bound, one pass over each tensor — AdamW reads p, g, m, v and writes p, m, v
 * (28 B/param); SGD with momentum 20 B/param.
 * Measured (bench/RESULTS.md, llvmpipe): an AdamW step over the tiny model's 1.67M
 * parameters takes ~54–66 ms (0.7 GB/s), dominated by per-dispatch overhead.
 *
 * AdamW reads its gradient through a rank-≤3 view (sizes and strides as parameters), so the
 * transposed weight gradients linear layers leave need no contiguous copy first; that variant
 * (compiled only for strided gradients) costs two integer divisions per element, which the
 * contiguous one does not pay. AdamW itself steps through the multi-tensor form,
 * ops/adamw_multi.ts (several parameters per launch, the same arithmetic); Muon's momentum and
 * apply run multi-tensor in ops/muon_batch.ts.
 *
 * These are low-level: they check what they need (contiguity, equal sizes, f32) and assume
 * the optimizer has validated the rest.
 */
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** SGD: elements, offsets of p, g and the momentum buffer, hyper-parameters, step flags. */
const SGD = params("sgd_update", {
  n: "u32",
  pOffset: "u32",
  gOffset: "u32",
  bufOffset: "u32",
  lr: "f32",
  weightDecay: "f32",
  momentum: "f32",
  dampening: "f32",
  first: "u32",
  nesterov: "u32",
});

/**
 * AdamW: offsets, the gradient's view as [d0, d1, d2] (its last two sizes and three strides),
 * β₁, β₂, 1 − lr·wd, lr / bc₁, √bc₂, ε.
 */
const ADAMW = params("adamw_update", {
  n: "u32",
  pOffset: "u32",
  gOffset: "u32",
  gD1: "u32",
  gD2: "u32",
  gS0: "u32",
  gS1: "u32",
  gS2: "u32",
  mOffset: "u32",
  vOffset: "u32",
  beta1: "f32",
  beta2: "f32",
  decay: "f32",
  stepSize: "f32",
  bc2Sqrt: "f32",
  eps: "f32",
});

/** Hyper-parameters of one SGD update (PyTorch semantics). */
export interface SgdKernelArgs {
  /** Learning rate. */
  lr: number;
  /** Momentum factor μ (0: plain SGD, no buffer). */
  momentum: number;
  /** Dampening of the gradient term added to the buffer (after the first step). */
  dampening: number;
  /** L2 weight decay added to the gradient (coupled, as in torch.optim.SGD). */
  weightDecay: number;
  /** Nesterov momentum: step along g + μ·buf instead of buf. */
  nesterov: boolean;
  /** True on the buffer's first update: buf = g (no dampening), as PyTorch does. */
  first: boolean;
}

/**
 * One fused SGD step, in place: g' = g + wd·p; buf = first ? g' : μ·buf + (1−dampening)·g';
 * d = nesterov ? g' + μ·buf : buf (or g' without momentum); p −= lr·d.
 * `buf` is null when momentum is 0.
 */
export function sgdUpdate(p: Tensor, g: Tensor, buf: Tensor | null, a: SgdKernelArgs): void {
  const n = p.size;
  needContiguousF32("sgd", "param", p, n);
  needContiguousF32("sgd", "grad", g, n);
  if (buf) needContiguousF32("sgd", "momentum buffer", buf, n);
  if (n === 0) return;
  const mom = buf !== null;
  const k = kernel({
    name: "sgd_update",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "G", type: "f32", access: "read" },
      ...(mom ? [{ name: "BUF", type: "f32", access: "read_write" as const }] : []),
    ],
    workgroupSize: [WG],
    params: SGD,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let ip = p_pOffset() + i;
  let p = P[ip];
  var d = G[p_gOffset() + i] + p_weightDecay() * p;
  ${
      mom
        ? `let ib = p_bufOffset() + i;
  var b = d;
  if (p_first() == 0u) { b = p_momentum() * BUF[ib] + (1.0 - p_dampening()) * d; }
  BUF[ib] = b;
  if (p_nesterov() != 0u) { d = d + p_momentum() * b; } else { d = b; }`
        : ""
    }
  P[ip] = p - p_lr() * d;`,
  });
  const words = SGD.pack({
    n,
    pOffset: p.offset,
    gOffset: g.offset,
    bufOffset: buf?.offset ?? 0,
    lr: a.lr,
    weightDecay: a.weightDecay,
    momentum: a.momentum,
    dampening: a.dampening,
    first: a.first,
    nesterov: a.nesterov,
  });
  const bufs = [p.storage("sgd").buf, g.storage("sgd").buf];
  if (buf) bufs.push(buf.storage("sgd").buf);
  dispatch(k, bufs, words, grid1d(n, WG));
}

/** Hyper-parameters of one AdamW update, with the bias corrections precomputed on the host. */
export interface AdamWKernelArgs {
  /** Learning rate. */
  lr: number;
  /** β₁ (first-moment decay). */
  beta1: number;
  /** β₂ (second-moment decay). */
  beta2: number;
  /** ε added to √v̂. */
  eps: number;
  /** Decoupled weight decay: p ← p·(1 − lr·wd) before the Adam step. */
  weightDecay: number;
  /** 1 − β₁^t for this parameter's step t (1 disables the correction). */
  biasCorrection1: number;
  /** 1 − β₂^t for this parameter's step t. */
  biasCorrection2: number;
}

/**
 * One fused AdamW step, in place (torch.optim.AdamW's arithmetic): p ← p·(1 − lr·wd);
 * m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε).
 * `g` may be a view of rank ≤ 3 with non-negative strides (e.g. the transposed weight
 * gradient a linear layer's backward leaves), read in place; a higher-rank gradient must be
 * contiguous.
 */
export function adamwUpdate(p: Tensor, g: Tensor, m: Tensor, v: Tensor, a: AdamWKernelArgs): void {
  const n = p.size;
  needContiguousF32("adamw", "param", p, n);
  const [gD1, gD2, gS0, gS1, gS2] = gradView3(g, p);
  const strided = !g.isContiguous;
  needContiguousF32("adamw", "exp_avg", m, n);
  needContiguousF32("adamw", "exp_avg_sq", v, n);
  if (n === 0) return;
  const k = kernel({
    name: strided ? "adamw_update_strided" : "adamw_update",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "G", type: "f32", access: "read" },
      { name: "MM", type: "f32", access: "read_write" },
      { name: "VV", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: ADAMW,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let ip = p_pOffset() + i; let im = p_mOffset() + i; let iv = p_vOffset() + i;
  ${
      strided
        ? `let d12 = p_gD1() * p_gD2();
  let r = i % d12;
  let g = G[p_gOffset() + (i / d12) * p_gS0() + (r / p_gD2()) * p_gS1() + (r % p_gD2()) * p_gS2()];`
        : "let g = G[p_gOffset() + i];"
    }
  let b1 = p_beta1(); let b2 = p_beta2();
  let m = b1 * MM[im] + (1.0 - b1) * g;
  let v = b2 * VV[iv] + (1.0 - b2) * g * g;
  MM[im] = m;
  VV[iv] = v;
  let p = P[ip] * p_decay();
  P[ip] = p - p_stepSize() * m / (sqrt(v) / p_bc2Sqrt() + p_eps());`,
  });
  const words = ADAMW.pack({
    n,
    pOffset: p.offset,
    gOffset: g.offset,
    gD1,
    gD2,
    gS0,
    gS1,
    gS2,
    mOffset: m.offset,
    vOffset: v.offset,
    beta1: a.beta1,
    beta2: a.beta2,
    decay: 1 - a.lr * a.weightDecay,
    stepSize: a.lr / a.biasCorrection1,
    bc2Sqrt: Math.sqrt(a.biasCorrection2),
    eps: a.eps,
  });
  const bufs = [p, g, m, v].map((t) => t.storage("adamw").buf);
  dispatch(k, bufs, words, grid1d(n, WG));
}

/**
 * A gradient's view as [d0, d1, d2] for the AdamW kernel: its last two sizes and its three
 * strides (rank padded from the left; a contiguous gradient of any rank as [1, 1, n]). Checks
 * f32 and the parameter's shape.
 */
export function gradView3(g: Tensor, p: Tensor): [number, number, number, number, number] {
  if (g.dtype !== "f32" || g.size !== p.size) {
    throw new MoongradError(
      "adamw",
      `grad must be f32 with ${p.size} elements ${fmtShape(p.shape)}, got ${g.dtype} ` +
        fmtShape(g.shape),
    );
  }
  if (g.isContiguous) return [1, Math.max(g.size, 1), 0, 0, 1];
  if (g.rank > 3 || g.strides.some((s) => s < 0)) {
    throw new MoongradError(
      "adamw",
      `grad must be contiguous or a view of rank ≤ 3 with non-negative strides, got ` +
        `${fmtShape(g.shape)} strides [${g.strides}]`,
    );
  }
  const shape = [1, 1, 1, ...g.shape].slice(-3);
  const strides = [0, 0, 0, ...g.strides].slice(-3);
  return [shape[1], shape[2], strides[0], strides[1], strides[2]];
}
