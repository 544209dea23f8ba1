/**
 * Muon's gather and scatter kernels for batched Newton–Schulz (optim/muon_batch.ts): Muon
 * orthogonalises every same-shaped matrix of a step in one [N, R, K] batch, and these two
 * kernels move one parameter's matrices into and out of that batch.
 *
 * - `muonGather`: the fused momentum update of one parameter (M ← μ·M + s·G; U = s·G + μ·M
 *   with Nesterov, else U = M), reading G through its strides (the linear layers' weight
 *   gradients are transposed views: no contiguous copy) and writing U into the parameter's
 *   slots of the batch, in wide orientation (a tall [A, B] matrix, A > B, is written as its
 *   [B, A] transpose) and zero-padded to the batch's [R, K] (every element of the slots is
 *   written, so the batch needs no zero fill).
 * - `muonScatterApply`: the fused apply of one parameter (p ← p·(1 − lr·wd) − lr·scale·O),
 *   reading O from the parameter's slots of the orthogonalised batch (undoing the transpose).
 *
 * Zero padding is exact for Newton–Schulz: the padded rows and columns of X·Xᵀ are zero, the
 * polynomial's a·I term only multiplies zero rows of X, and the Frobenius norm is unchanged,
 * so the real block of NS(padded U) is NS(U) (f32 sums only gain exact zero terms).
 *
 * Cost: memory-bound, one pass each — gather reads G and M and writes M and the padded U
 * (16 B per element plus 4 B per padding element), apply 12 B per element; one dispatch per
 * parameter each. The arithmetic is that of ops/optim_update.ts's muonMomentum / muonApply,
 * term for term.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** Gather: slot elements, the parameter's [E, A, B], the batch's [R, K], G's view, offsets. */
const MUON_GATHER = params("muon_gather", {
  n: "u32",
  A: "u32",
  B: "u32",
  R: "u32",
  K: "u32",
  tall: "u32",
  gOffset: "u32",
  gsE: "u32",
  gsA: "u32",
  gsB: "u32",
  mOffset: "u32",
  uOffset: "u32",
  mu: "f32",
  gradScale: "f32",
  nesterov: "u32",
});

/** Scatter-apply: parameter elements, [A, B], the batch's K, offsets, 1 − lr·wd, lr·scale. */
const MUON_SCATTER_APPLY = params("muon_scatter_apply", {
  n: "u32",
  A: "u32",
  B: "u32",
  K: "u32",
  RK: "u32",
  tall: "u32",
  pOffset: "u32",
  oOffset: "u32",
  decay: "f32",
  step: "f32",
});

/** Where a parameter's matrices sit in a Newton–Schulz batch [N, R, K]. */
export interface BatchSlot {
  /** The batch (contiguous f32 [N, R, K], R ≤ K). */
  batch: Tensor;
  /** Index of the parameter's first matrix in the batch. */
  first: number;
}

function slotGeometry(op: string, p: Tensor, slot: BatchSlot) {
  const A = p.shape[p.rank - 2];
  const B = p.shape[p.rank - 1];
  const E = p.rank === 3 ? p.shape[0] : 1;
  const b = slot.batch;
  if (b.rank !== 3 || b.dtype !== "f32" || !b.isContiguous) {
    throw new MoongradError(
      op,
      `batch must be a contiguous f32 [N, R, K], got ${fmtShape(b.shape)}`,
    );
  }
  const [N, R, K] = b.shape;
  const tall = A > B;
  const [r, k] = tall ? [B, A] : [A, B];
  if (r > R || k > K || slot.first + E > N || !Number.isInteger(slot.first) || slot.first < 0) {
    throw new MoongradError(
      op,
      `parameter ${fmtShape(p.shape)} (as ${E} × [${r}, ${k}]) does not fit batch ` +
        `${fmtShape(b.shape)} at matrix ${slot.first}`,
    );
  }
  return { A, B, E, R, K, tall, base: b.offset + slot.first * R * K };
}

/**
 * Muon's momentum for one parameter [A, B] or [E, A, B], gathered into a Newton–Schulz batch:
 * M ← μ·M + s·G (M contiguous, shaped like the parameter), and U = s·G + μ·M (Nesterov) or
 * U = M written, transposed when A > B and zero-padded, into matrices `first … first+E−1` of
 * `slot.batch`. `g` may be any view with non-negative strides.
 */
export function muonGather(
  g: Tensor,
  m: Tensor,
  slot: BatchSlot,
  mu: number,
  gradScale: number,
  nesterov: boolean,
): void {
  const op = "muon";
  const { A, B, E, R, K, tall, base } = slotGeometry(op, m, slot);
  needContiguousF32(op, "momentum buffer", m, E * A * B);
  if (g.dtype !== "f32" || g.rank !== m.rank || g.shape.some((d, i) => d !== m.shape[i])) {
    throw new MoongradError(
      op,
      `grad must be f32 ${fmtShape(m.shape)}, got ${g.dtype} ${fmtShape(g.shape)}`,
    );
  }
  if (g.strides.some((s) => s < 0)) {
    throw new MoongradError(op, `grad strides must be non-negative, got [${g.strides}]`);
  }
  const n = E * R * K;
  if (n === 0) return;
  const k = kernel({
    name: "muon_gather",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "MM", type: "f32", access: "read_write" },
      { name: "U", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: MUON_GATHER,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let R = p_R(); let K = p_K();
  let e = i / (R * K); let rem = i % (R * K);
  var a = rem / K; var b = rem % K;
  if (p_tall() != 0u) { let t = a; a = b; b = t; }
  var u = 0.0;
  if (a < p_A() && b < p_B()) {
    let g = p_gradScale() * G[p_gOffset() + e * p_gsE() + a * p_gsA() + b * p_gsB()];
    let im = p_mOffset() + (e * p_A() + a) * p_B() + b;
    let m = p_mu() * MM[im] + g;
    MM[im] = m;
    u = m;
    if (p_nesterov() != 0u) { u = g + p_mu() * m; }
  }
  U[p_uOffset() + i] = u;`,
  });
  const gs = g.strides;
  const words = MUON_GATHER.pack({
    n,
    A,
    B,
    R,
    K,
    tall,
    gOffset: g.offset,
    gsE: g.rank === 3 ? gs[0] : 0,
    gsA: gs[g.rank - 2],
    gsB: gs[g.rank - 1],
    mOffset: m.offset,
    uOffset: base,
    mu,
    gradScale,
    nesterov,
  });
  const bufs = [g, m, slot.batch].map((t) => t.storage(op).buf);
  dispatch(k, bufs, words, grid1d(n, WG));
}

/**
 * Muon's apply for one parameter, reading its orthogonalised matrices from a batch:
 * p ← p·(1 − lr·wd) − lr·scale·O, O = matrices `first …` of `slot.batch` (transposed back
 * when A > B; padding ignored).
 */
export function muonScatterApply(
  p: Tensor,
  slot: BatchSlot,
  lr: number,
  weightDecay: number,
  scale: number,
): void {
  const op = "muon";
  const { A, B, E, R, K, tall, base } = slotGeometry(op, p, slot);
  const n = E * A * B;
  needContiguousF32(op, "param", p, n);
  if (n === 0) return;
  const k = kernel({
    name: "muon_scatter_apply",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "O", type: "f32", access: "read" },
    ],
    workgroupSize: [WG],
    params: MUON_SCATTER_APPLY,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let A = p_A(); let B = p_B();
  let e = i / (A * B); let rem = i % (A * B);
  var r = rem / B; var c = rem % B;
  if (p_tall() != 0u) { let t = r; r = c; c = t; }
  let ip = p_pOffset() + i;
  P[ip] = P[ip] * p_decay() - p_step() * O[p_oOffset() + e * p_RK() + r * p_K() + c];`,
  });
  const words = MUON_SCATTER_APPLY.pack({
    n,
    A,
    B,
    K,
    RK: R * K,
    tall,
    pOffset: p.offset,
    oOffset: base,
    decay: 1 - lr * weightDecay,
    step: lr * scale,
  });
  dispatch(k, [p.storage(op).buf, slot.batch.storage(op).buf], words, grid1d(n, WG));
}
