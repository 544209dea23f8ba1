/**
 * Muon's gather and scatter kernels for batched Newton–Schulz (optim/muon_batch.ts): Muon
 * orthogonalises every same-shaped matrix of a step in one [N, R, K] batch, and these two
 * kernels move one parameter's matrices into and out of that batch.
 *
 * - `muonGather`: the fused momentum update of each parameter (M ← μ·M + s·G; U = s·G + μ·M
 *   with Nesterov, else U = M), reading G through its strides (the linear layers' weight
 *   gradients are transposed views: no contiguous copy) and writing U into the parameter's
 *   slots of the batch, in wide orientation (a tall [A, B] matrix, A > B, is written as its
 *   [B, A] transpose) and zero-padded to the batch's [R, K] (every element of the slots is
 *   written, so the batch needs no zero fill).
 * - `muonScatterApply`: the fused apply of each parameter (p ← p·(1 − lr·wd) − lr·scale·O),
 *   reading O from the parameter's slots of the orthogonalised batch (undoing the transpose).
 *
 * Multi-tensor launches (PyTorch's multi_tensor_apply, within WebGPU's rules): WebGPU binds
 * one buffer per binding and every tensor is a sub-buffer of a pool slab, so one launch takes
 * several tensors as separate bindings — up to 6 parameters per gather (G and M each: 13
 * bindings with the batch) and 8 per apply, fewer where the device allows fewer storage
 * buffers per stage (Dawn/SwiftShader: 12) — with each tensor's sizes, offsets and strides in
 * array parameters; a thread finds its tensor by a scan over at most 8 start indices and
 * reads it through a switch over the bindings. Tiny K2: 44 gathers + 44 applies → 8 + 7
 * launches. On llvmpipe the switch runs every case masked (see ops/adamw_multi.ts: ~+30 % on
 * AdamW's memory-bound pass); here it is small next to Newton–Schulz's products.
 *
 * Zero padding is exact for Newton–Schulz: the padded rows and columns of X·Xᵀ are zero, the
 * polynomial's a·I term only multiplies zero rows of X, and the Frobenius norm is unchanged,
 * so the real block of NS(padded U) is NS(U) (f32 sums only gain exact zero terms).
 *
 * Cost: memory-bound, one pass each — gather reads G and M and writes M and the padded U
 * (16 B per element plus 4 B per padding element), apply 12 B per element; one dispatch per
 * parameter each. The arithmetic is the fused momentum / apply of REFERENCE §2,
 * term for term.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { gpuDevice } from "../core/device.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;
/** Most parameters per gather launch (6 × 9 words + 7 fit the 63-word block). */
const GATHER_MAX = 6;
/** Most parameters per apply launch (8 × 7 words + 4 fit the 63-word block). */
const APPLY_MAX = 8;

/** Gather: threads, the batch's [R, K] and offset, μ, s, Nesterov; per tensor its view. */
const MUON_GATHER = params("muon_gather", {
  n: "u32",
  R: "u32",
  K: "u32",
  uOffset: "u32",
  mu: "f32",
  gradScale: "f32",
  nesterov: "u32",
  start: ["u32", GATHER_MAX],
  A: ["u32", GATHER_MAX],
  B: ["u32", GATHER_MAX],
  tall: ["u32", GATHER_MAX],
  gOffset: ["u32", GATHER_MAX],
  gsE: ["u32", GATHER_MAX],
  gsA: ["u32", GATHER_MAX],
  gsB: ["u32", GATHER_MAX],
  mOffset: ["u32", GATHER_MAX],
});

/** Scatter-apply: threads, the batch's K and R·K, 1 − lr·wd; per tensor its place and lr·scale. */
const MUON_SCATTER_APPLY = params("muon_scatter_apply", {
  n: "u32",
  K: "u32",
  RK: "u32",
  decay: "f32",
  start: ["u32", APPLY_MAX],
  A: ["u32", APPLY_MAX],
  B: ["u32", APPLY_MAX],
  tall: ["u32", APPLY_MAX],
  pOffset: ["u32", APPLY_MAX],
  oOffset: ["u32", APPLY_MAX],
  step: ["f32", APPLY_MAX],
});

/** One parameter's momentum gather: its gradient, momentum buffer and first batch matrix. */
export interface GatherItem {
  /** The gradient ([A, B] or [E, A, B], f32, any view with non-negative strides). */
  grad: Tensor;
  /** The momentum buffer (contiguous f32, the parameter's shape), updated in place. */
  momentum: Tensor;
  /** Index of the parameter's first matrix in the batch. */
  first: number;
}

/** One parameter's apply: the parameter, its first batch matrix and its step lr·scale. */
export interface ApplyItem {
  /** The parameter ([A, B] or [E, A, B], contiguous f32), updated in place. */
  param: Tensor;
  /** Index of the parameter's first matrix in the batch. */
  first: number;
  /** lr · scale for this parameter. */
  step: number;
}

function batchShape(op: string, b: Tensor): [number, number, number] {
  if (b.rank !== 3 || b.dtype !== "f32" || !b.isContiguous) {
    throw new MoongradError(
      op,
      `batch must be a contiguous f32 [N, R, K], got ${fmtShape(b.shape)}`,
    );
  }
  return [b.shape[0], b.shape[1], b.shape[2]];
}

/** [E, A, B], tall, after checking that the matrices fit the batch at `first`. */
function geometry(op: string, t: Tensor, batch: Tensor, first: number) {
  if (t.rank !== 2 && t.rank !== 3) {
    throw new MoongradError(op, `expected [A, B] or [E, A, B], got ${fmtShape(t.shape)}`);
  }
  const [N, R, K] = batchShape(op, batch);
  const A = t.shape[t.rank - 2];
  const B = t.shape[t.rank - 1];
  const E = t.rank === 3 ? t.shape[0] : 1;
  const tall = A > B;
  const [r, k] = tall ? [B, A] : [A, B];
  if (r > R || k > K || !Number.isInteger(first) || first < 0 || first + E > N) {
    throw new MoongradError(
      op,
      `${fmtShape(t.shape)} (as ${E} × [${r}, ${k}]) does not fit batch ${fmtShape(batch.shape)} ` +
        `at matrix ${first}`,
    );
  }
  return { A, B, E, tall };
}

/** Parameters per launch: the word budget, and the device's storage buffers per stage. */
function perLaunch(most: number, bindingsPerTensor: number): number {
  const stage = gpuDevice("muon").limits.maxStorageBuffersPerShaderStage;
  return Math.max(1, Math.min(most, Math.floor((stage - 1) / bindingsPerTensor)));
}

/** WGSL: `fn name(t: u32, i: u32) -> f32` reading binding `<prefix><t>`. */
function loadFn(name: string, prefix: string, count: number): string {
  const cases = Array.from({ length: count }, (_, t) => `case ${t}u: { v = ${prefix}${t}[i]; }`);
  return `fn ${name}(t: u32, i: u32) -> f32 {
  var v = 0.0;
  switch t { ${cases.join(" ")} default: {} }
  return v;
}`;
}

/** WGSL: `fn name(t: u32, i: u32, v: f32)` writing binding `<prefix><t>`. */
function storeFn(name: string, prefix: string, count: number): string {
  const cases = Array.from({ length: count }, (_, t) => `case ${t}u: { ${prefix}${t}[i] = v; }`);
  return `fn ${name}(t: u32, i: u32, v: f32) {
  switch t { ${cases.join(" ")} default: {} }
}`;
}

/** WGSL: the tensor `t` whose start is the last ≤ i, over `count` tensors. */
function findTensor(count: number): string {
  return `var t = 0u;
  for (var j = 1u; j < ${count}u; j++) { if (i >= p_start(j)) { t = j; } }
  let l = i - p_start(t);`;
}

/**
 * Muon's momentum for each parameter [A, B] or [E, A, B], gathered into a Newton–Schulz
 * batch: M ← μ·M + s·G, and U = s·G + μ·M (Nesterov) or U = M written, transposed when A > B
 * and zero-padded, into matrices `first … first+E−1` of `batch`. Several parameters per
 * launch (see the module doc); items must fill consecutive matrices within a launch's chunk
 * for the fewest launches, but any placement is correct.
 */
export function muonGather(
  items: readonly GatherItem[],
  batch: Tensor,
  mu: number,
  gradScale: number,
  nesterov: boolean,
): void {
  const op = "muon";
  const [, R, K] = batchShape(op, batch);
  const geo = items.map((it) => {
    const g = geometry(op, it.momentum, batch, it.first);
    needContiguousF32(op, "momentum buffer", it.momentum, g.E * g.A * g.B);
    const gr = it.grad;
    if (
      gr.dtype !== "f32" || gr.rank !== it.momentum.rank ||
      gr.shape.some((d, i) => d !== it.momentum.shape[i])
    ) {
      throw new MoongradError(
        op,
        `grad must be f32 ${fmtShape(it.momentum.shape)}, got ${gr.dtype} ${fmtShape(gr.shape)}`,
      );
    }
    if (gr.strides.some((s) => s < 0)) {
      throw new MoongradError(op, `grad strides must be non-negative, got [${gr.strides}]`);
    }
    return g;
  });
  const per = perLaunch(GATHER_MAX, 2);
  const live = items.map((_, i) => i).filter((i) => geo[i].E * R * K > 0);
  for (let c = 0; c < live.length; c += per) {
    const chunk = live.slice(c, c + per);
    // Threads walk the batch's slots of the chunk's parameters, one run per parameter.
    const start: number[] = [];
    const runs: number[] = [];
    let n = 0;
    for (const i of chunk) {
      start.push(n);
      runs.push(items[i].first * R * K - n);
      n += geo[i].E * R * K;
    }
    // Slots are contiguous when the chunk's parameters are consecutive in the batch (what
    // Muon does); otherwise each parameter gets its own launch.
    if (runs.some((r) => r !== runs[0])) {
      for (const i of chunk) muonGather([items[i]], batch, mu, gradScale, nesterov);
      continue;
    }
    const T = chunk.length;
    const k = kernel({
      name: `muon_gather_${T}`,
      bindings: [
        ...chunk.map((_, t) => ({ name: `G${t}`, type: "f32" as const, access: "read" as const })),
        ...chunk.map((_, t) => ({
          name: `M${t}`,
          type: "f32" as const,
          access: "read_write" as const,
        })),
        { name: "U", type: "f32", access: "read_write" },
      ],
      workgroupSize: [WG],
      params: MUON_GATHER,
      prelude: `${loadFn("load_g", "G", T)}\n${loadFn("load_m", "M", T)}\n${
        storeFn("store_m", "M", T)
      }`,
      body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  ${findTensor(T)}
  let R = p_R(); let K = p_K();
  let e = l / (R * K); let rem = l % (R * K);
  var a = rem / K; var b = rem % K;
  if (p_tall(t) != 0u) { let s = a; a = b; b = s; }
  var u = 0.0;
  let A = p_A(t); let B = p_B(t);
  if (a < A && b < B) {
    let g = p_gradScale() * load_g(t, p_gOffset(t) + e * p_gsE(t) + a * p_gsA(t) + b * p_gsB(t));
    let im = p_mOffset(t) + (e * A + a) * B + b;
    let m = p_mu() * load_m(t, im) + g;
    store_m(t, im, m);
    u = m;
    if (p_nesterov() != 0u) { u = g + p_mu() * m; }
  }
  U[p_uOffset() + i] = u;`,
    });
    const gs = (i: number) => items[i].grad.strides;
    const rank3 = (i: number) => items[i].grad.rank === 3;
    const words = MUON_GATHER.pack({
      n,
      R,
      K,
      uOffset: batch.offset + runs[0],
      mu,
      gradScale,
      nesterov,
      start,
      A: chunk.map((i) => geo[i].A),
      B: chunk.map((i) => geo[i].B),
      tall: chunk.map((i) => (geo[i].tall ? 1 : 0)),
      gOffset: chunk.map((i) => items[i].grad.offset),
      gsE: chunk.map((i) => (rank3(i) ? gs(i)[0] : 0)),
      gsA: chunk.map((i) => gs(i)[gs(i).length - 2]),
      gsB: chunk.map((i) => gs(i)[gs(i).length - 1]),
      mOffset: chunk.map((i) => items[i].momentum.offset),
    });
    const bufs = [
      ...chunk.map((i) => items[i].grad.storage(op).buf),
      ...chunk.map((i) => items[i].momentum.storage(op).buf),
      batch.storage(op).buf,
    ];
    dispatch(k, bufs, words, grid1d(n, WG));
  }
}

/**
 * Muon's apply for each parameter, reading its orthogonalised matrices from a batch:
 * p ← p·(1 − lr·wd) − step·O, O = matrices `first …` of `batch` (transposed back when A > B;
 * padding ignored). Several parameters per launch (see the module doc).
 */
export function muonScatterApply(
  items: readonly ApplyItem[],
  batch: Tensor,
  lr: number,
  weightDecay: number,
): void {
  const op = "muon";
  const [, R, K] = batchShape(op, batch);
  const geo = items.map((it) => {
    const g = geometry(op, it.param, batch, it.first);
    needContiguousF32(op, "param", it.param, g.E * g.A * g.B);
    return g;
  });
  const per = perLaunch(APPLY_MAX, 1);
  const live = items.map((_, i) => i).filter((i) => items[i].param.size > 0);
  for (let c = 0; c < live.length; c += per) {
    const chunk = live.slice(c, c + per);
    const start: number[] = [];
    let n = 0;
    for (const i of chunk) {
      start.push(n);
      n += items[i].param.size;
    }
    const T = chunk.length;
    const k = kernel({
      name: `muon_scatter_apply_${T}`,
      bindings: [
        ...chunk.map((_, t) => ({
          name: `P${t}`,
          type: "f32" as const,
          access: "read_write" as const,
        })),
        { name: "O", type: "f32", access: "read" },
      ],
      workgroupSize: [WG],
      params: MUON_SCATTER_APPLY,
      prelude: `${loadFn("load_p", "P", T)}\n${storeFn("store_p", "P", T)}`,
      body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  ${findTensor(T)}
  let A = p_A(t); let B = p_B(t);
  let e = l / (A * B); let rem = l % (A * B);
  var r = rem / B; var c = rem % B;
  if (p_tall(t) != 0u) { let s = r; r = c; c = s; }
  let ip = p_pOffset(t) + l;
  store_p(t, ip, load_p(t, ip) * p_decay() - p_step(t) * O[p_oOffset(t) + e * p_RK() + r * p_K() + c]);`,
    });
    const words = MUON_SCATTER_APPLY.pack({
      n,
      K,
      RK: R * K,
      decay: 1 - lr * weightDecay,
      start,
      A: chunk.map((i) => geo[i].A),
      B: chunk.map((i) => geo[i].B),
      tall: chunk.map((i) => (geo[i].tall ? 1 : 0)),
      pOffset: chunk.map((i) => items[i].param.offset),
      oOffset: chunk.map((i) => batch.offset + items[i].first * R * K),
      step: chunk.map((i) => items[i].step),
    });
    const bufs = [...chunk.map((i) => items[i].param.storage(op).buf), batch.storage(op).buf];
    dispatch(k, bufs, words, grid1d(n, WG));
  }
}
