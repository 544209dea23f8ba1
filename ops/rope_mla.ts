/**
 * RoPE fused with MLA's layouts, so that the backward of the query and key assembly writes each
 * gradient in one dispatch, already laid out like the projection it flows back to.
 *
 * - `ropeTail(x, dp)` = concat(x[..., :dp], rope(x[..., dp:])): MLA's q = [q_nope | q_rope]
 *   from the whole head view qh of q_b_proj's output. Forward: ops/rope.ts's concat kernel on
 *   two views of x (the same arithmetic as `ropeConcat(slice, slice)`). Backward: the same
 *   kernel again (copy + rotation by −angle) writing d(x) into a fresh buffer in x's memory
 *   order (`denseStridesLike`): for qh = permute(reshape(q, [B, T, H, d]), [0, 2, 1, 3]) the
 *   gradient is a permuted view of a contiguous [B, T, H, d] buffer, so permute's and
 *   reshape's backward are views (no copy).
 * - `ropeInsertShared(x, at, shared, start)` = [x[..., :at] | rope(shared[..., start:]) | x[..., at:]]
 *   with the rotated block shared by every head: MLA's [k_nope | k_rope | v] from the head view
 *   kvh of kv_b_proj's output and the whole kv_a_proj_with_mqa output ckv = [c | k_rope].
 *   Forward: the concat kernel with the rotated block inserted at column `at` and read from a
 *   stride-0 head view (arithmetic as `ropeConcat`, which copies no v; the extra v copy is what
 *   lets its backward be one kernel). Backward: ONE new kernel (`rope_insert_grad_*`) writes
 *   d(x) in x's memory order (the k_nope and v columns) and d(shared) contiguous: zeros in the
 *   columns before `start` and, in the rotated ones, the sum over the heads of the inverse
 *   rotation (one thread per shared pair, looping over the heads in order, f32 accumulation).
 *
 * Measured (tiny-K2 training step, 4 MLA layers, batch 4 × 64, wgpu/lavapipe): backward 251 → 219
 * dispatches. Per layer the assembly's backward went from 15 dispatches (rope ×2, slice_grad ×7,
 * add ×3, copy ×2, head sum ×1) to 7: rope_cat (q) and rope_insert_grad (k, v), then
 * slice_grad ×2 + add for the k / v slices of the key-value output and slice_grad + add for the
 * c slice of ckv (attention's dk / dv and the norm's d(c) arrive separately). The forward count
 * is unchanged (attention reads k and v through one binding, ops/attention.ts).
 */
import { isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, kernel } from "../core/kernel.ts";
import { fitLength, params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { numel } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { TRIG_WGSL } from "./wgsl_trig.ts";
import { columnsPerThread, grid1d, linearId } from "./grid.ts";
import { positionStrides, ropeArgs, type RopeOptions, rotate } from "./rope.ts";

const WG = 256;

/**
 * Strides of a dense (contiguous, non-overlapping) buffer holding `shape` in the memory order
 * of `strides`: axes sorted by decreasing stride (ties by axis), the last one innermost. For a
 * permuted view of a contiguous tensor these are its own strides; for a contiguous tensor,
 * contiguous strides.
 */
export function denseStridesLike(shape: readonly number[], strides: readonly number[]): number[] {
  const order = shape.map((_, i) => i).sort((a, b) => strides[b] - strides[a] || a - b);
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let k = order.length - 1; k >= 0; k--) {
    out[order[k]] = s;
    s *= shape[order[k]];
  }
  return out;
}

/** A new tensor of x's shape and dtype whose buffer is laid out in x's memory order. */
function emptyLike(x: Tensor): Tensor {
  if (x.isContiguous) return Tensor.empty(x.shape, x.dtype);
  const base = Tensor.empty([x.size], x.dtype);
  const out = base.view(x.shape, denseStridesLike(x.shape, x.strides), 0);
  base.dispose();
  return out;
}

/** A view of x's last-axis columns c0..c0+w−1. */
function columns(x: Tensor, c0: number, w: number): Tensor {
  const last = x.strides[x.rank - 1];
  return x.view([...x.shape.slice(0, -1), w], x.strides, x.offset + c0 * last);
}

/**
 * concat([x[..., :dp], rope(x[..., dp:])], -1) in one dispatch each way: the last d = W − dp
 * columns of x [..., T, W] (any strides, e.g. the permuted head view of a projection) rotate as
 * `rope` does (same `positions`, `thetaOrInvFreq` and options), the first dp pass through.
 * Output contiguous [..., T, W]. Backward is one dispatch that writes d(x) in x's own memory
 * order, so the gradient of a permuted view is itself a permuted view of a contiguous buffer
 * (the permute / reshape backward behind it cost nothing). f32 or f16 (rotated in f32).
 *
 * @example MLA's queries: rotate the last d_r = 8 of each head's 24 columns
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.randn([2, 5, 4 * 24], { seed: 0 }); // q_b_proj's output [B, T, H·d_qk]
 * const qh = q.reshape([2, 5, 4, 24]).permute([0, 2, 1, 3]); // [B, H, T, d_qk], a view
 * const y = mg.nn.ropeTail(qh, 16, 0, 10000); // [q_nope | rope(q_rope)]
 * console.log(y.shape); // [2, 4, 5, 24]
 * ```
 */
export function ropeTail(
  x: Tensor,
  dp: number,
  positions: number | Tensor,
  thetaOrInvFreq: number | Tensor,
  options: RopeOptions = {},
): Tensor {
  const op = "ropeTail";
  if (!(x instanceof Tensor)) throw new MoongradError(op, "x must be a Tensor");
  x.storage(op);
  const W = x.shape[x.rank - 1];
  if (
    !isFloat(x.dtype) || x.rank < 2 || !Number.isInteger(dp) || dp < 0 || dp > W ||
    (W - dp) % 2 !== 0
  ) {
    throw new MoongradError(
      op,
      `x must be f32/f16 [..., T, W] and dp an integer in [0, W] with W − dp even, got ` +
        `${x.dtype} ${fmtShape(x.shape)} and dp = ${dp}`,
    );
  }
  const head = columns(x, 0, dp);
  const tail = columns(x, dp, W - dp);
  let args;
  try {
    args = ropeArgs(op, tail, positions, thetaOrInvFreq, options);
  } catch (e) {
    head.dispose();
    tail.dispose();
    throw e;
  }
  const { inv, owned, interleaved, factor } = args;
  const out = rotate(tail, positions, inv, 1, interleaved, factor, head, dp);
  head.dispose();
  tail.dispose();
  const saved = positions instanceof Tensor ? [inv, positions] : [inv];
  record(out, op, [x], (g, _needs, [si, sp]) => {
    const dx = emptyLike(x);
    const gHead = columns(g, 0, dp), gTail = columns(g, dp, W - dp);
    rotate(gTail, sp ?? (positions as number), si, -1, interleaved, factor, gHead, dp, dx);
    gHead.dispose();
    gTail.dispose();
    return [dx];
  }, saved);
  if (owned) inv.dispose();
  return out;
}

/** Largest rank of x's outer axes in the backward kernel: 19 scalars and four arrays. */
const INSERT_RANK = fitLength(19, 4);

/** The backward kernel's words (see `insertGrad`). */
const INSERT_GRAD = params("rope_insert_grad", {
  pairs: "u32",
  zeros: "u32",
  copies: "u32",
  half: "u32",
  outerRank: "u32",
  invOffset: "u32",
  pos: "i32",
  factor: "f32",
  step: "u32",
  partner: "u32",
  gOffset: "u32",
  gLast: "u32",
  at: "u32",
  width: "u32",
  sharedWidth: "u32",
  start: "u32",
  dxOffset: "u32",
  dxLast: "u32",
  sharedOffset: "u32",
  outer: ["u32", INSERT_RANK],
  gStrides: ["u32", INSERT_RANK],
  posStrides: ["u32", INSERT_RANK],
  dxStrides: ["u32", INSERT_RANK],
});

/**
 * Backward of `ropeInsertShared` in one dispatch. g [..., H, T, W + d] (any strides) → d(x)
 * (`dx`, x's shape, any strides) and d(shared) (`ds`, contiguous [..., T, Ws]). Threads: one per
 * pair of a shared row (inverse rotation of every head's g, summed over the heads in order),
 * then one per zero column (before `start`) of d(shared), then one per element of d(x).
 */
function insertGrad(
  g: Tensor,
  dx: Tensor,
  ds: Tensor,
  at: number,
  start: number,
  positions: number | Tensor,
  inv: Tensor,
  interleaved: boolean,
  factor: number,
): void {
  const op = "ropeInsertShared";
  const outer = g.shape.slice(0, -1);
  const r1 = outer.length;
  const W = dx.shape[dx.rank - 1];
  const Ws = ds.shape[ds.rank - 1];
  const d = Ws - start;
  const half = d / 2;
  const sharedRows = numel(ds.shape.slice(0, -1));
  const nPairs = sharedRows * half;
  const zeros = sharedRows * start;
  // Copy threads move G consecutive columns each (ops/rope.ts `rotate`: the index arithmetic
  // and parameter reads cost more than the copy on a CPU adapter).
  const G = columnsPerThread(W);
  const copies = numel(outer) * W / G;
  if (nPairs + zeros + copies === 0) return;
  const byTensor = positions instanceof Tensor;
  const posStrides = byTensor
    ? positionStrides(positions, outer, g)
    : outer.map((_, i) => (i === r1 - 1 ? 1 : 0));
  const [step, partner] = interleaved ? [2, 1] : [1, half];
  const words = INSERT_GRAD.pack({
    pairs: nPairs,
    zeros,
    copies,
    half,
    outerRank: r1,
    invOffset: inv.offset,
    pos: byTensor ? positions.offset : positions,
    factor,
    step,
    partner,
    gOffset: g.offset,
    gLast: g.strides[g.rank - 1],
    at,
    width: W,
    sharedWidth: Ws,
    start,
    dxOffset: dx.offset,
    dxLast: dx.strides[dx.rank - 1],
    sharedOffset: ds.offset,
    outer,
    gStrides: g.strides.slice(0, -1),
    posStrides,
    dxStrides: dx.strides.slice(0, -1),
  });
  const t = wgslType(g.dtype);
  const bindings: Binding[] = [
    { name: "g", type: t, access: "read" },
    { name: "inv", type: "f32", access: "read" },
  ];
  if (byTensor) bindings.push({ name: "pos", type: "i32", access: "read" });
  bindings.push({ name: "dx", type: t, access: "read_write" });
  bindings.push({ name: "ds", type: t, access: "read_write" });
  // The angle of a head's row: from the positions tensor (may differ per head), or the offset
  // plus the row's T coordinate (the same for every head: sin/cos once per pair).
  const angle = (pos: string) => `mg_sincos(${pos} * inv[p_invOffset() + j])`;
  const loop = byTensor
    ? `
  for (var h = 0u; h < heads; h++) {
    let sc = ${angle(`f32(pos[po + h * ph + u32(p_pos())])`)};
    let c = sc.y * f;
    let s = -(sc.x * f);
    let ga = f32(g[go + h * gh + ia * gl]);
    let gb = f32(g[go + h * gh + ib * gl]);
    sa += ga * c - gb * s;
    sb += ga * s + gb * c;
  }`
    : `
  let sc = ${angle(`f32(p_pos() + i32(po))`)};
  let c = sc.y * f;
  let s = -(sc.x * f);
  for (var h = 0u; h < heads; h++) {
    let ga = f32(g[go + h * gh + ia * gl]);
    let gb = f32(g[go + h * gh + ib * gl]);
    sa += ga * c - gb * s;
    sb += ga * s + gb * c;
  }`;
  const k = kernel({
    name: `rope_insert_grad_${byTensor ? "pos" : "offset"}`,
    bindings,
    workgroupSize: [WG],
    params: INSERT_GRAD,
    pairable: true,
    prelude: TRIG_WGSL,
    body: `
  let i = ${linearId(WG)};
  let half = p_half();
  let gl = p_gLast();
  if (i >= p_pairs() + p_zeros() + p_copies()) { return; }
  if (i >= p_pairs() + p_zeros()) {
    let k = i - p_pairs() - p_zeros();
    let w = p_width() / ${G}u;
    var rem = k / w;
    let col0 = (k % w) * ${G}u;
    var go = p_gOffset();
    var xo = p_dxOffset();
    for (var d = i32(p_outerRank()) - 1; d >= 0; d--) {
      let dim = p_outer(u32(d));
      let cd = rem % dim;
      rem /= dim;
      go += cd * p_gStrides(u32(d));
      xo += cd * p_dxStrides(u32(d));
    }
    for (var q = 0u; q < ${G}u; q++) {
      let col = col0 + q;
      let gc = select(col, col + 2u * half, col >= p_at());
      dx[xo + col * p_dxLast()] = g[go + gc * gl];
    }
    return;
  }
  if (i >= p_pairs()) {
    let k = i - p_pairs();
    let st = p_start();
    ds[p_sharedOffset() + (k / st) * p_sharedWidth() + k % st] = ${t}(0.0);
    return;
  }
  let j = i % half;
  let srow = i / half;
  // The shared row's coordinates are x's outer ones without the head axis (outerRank − 2).
  let ha = p_outerRank() - 2u;
  var rem = srow;
  var go = p_gOffset();
  var po = 0u;
  for (var d = i32(p_outerRank()) - 1; d >= 0; d--) {
    if (u32(d) == ha) { continue; }
    let dim = p_outer(u32(d));
    let cd = rem % dim;
    rem /= dim;
    go += cd * p_gStrides(u32(d));
    po += cd * p_posStrides(u32(d));
  }
  let heads = p_outer(ha);
  let gh = p_gStrides(ha);
  let ph = p_posStrides(ha);
  let f = p_factor();
  let ia = p_at() + j * p_step();
  let ib = ia + p_partner();
  var sa = 0.0;
  var sb = 0.0;${loop}
  let so = p_sharedOffset() + srow * p_sharedWidth() + p_start() + j * p_step();
  ds[so] = ${t}(sa);
  ds[so + p_partner()] = ${t}(sb);`,
  });
  const bufs = [g.storage(op).buf, inv.storage(op).buf];
  if (byTensor) bufs.push(positions.storage(op).buf);
  bufs.push(dx.storage(op).buf, ds.storage(op).buf);
  dispatch(k, bufs, words, grid1d(nPairs + zeros + copies, WG));
}

/**
 * [x[..., :at] | rope(shared[..., start:]) | x[..., at:]] in one dispatch each way, the rotated
 * block shared by all heads: x [..., H, T, W] (any strides, e.g. MLA's permuted kv_b_proj head
 * view [k_nope | v]) and shared [..., T, Ws] (x's shape without the head axis; e.g. the whole
 * kv_a_proj_with_mqa output [c | k_rope]), whose last d = Ws − start columns rotate as `rope`
 * does (positions broadcast to [..., H, T]). Output contiguous [..., H, T, W + d]: MLA's
 * [k_nope | k_rope | v], k and v being slices of it. Backward is one dispatch: d(x) in x's
 * memory order (a permuted view of a contiguous buffer for MLA's head view) and d(shared)
 * contiguous, zero before `start` and the inverse rotation summed over the heads after.
 * f32 or f16 (rotated and summed in f32).
 *
 * @example MLA's keys and values: [k_nope 16 | k_rope 8 | v 16] per head
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const kvh = mg.randn([2, 5, 4, 32], { seed: 0 }).permute([0, 2, 1, 3]); // [B, H, T, d_n + d_v]
 * const ckv = mg.randn([2, 5, 32 + 8], { seed: 1 }); // [B, T, r_kv + d_r]
 * const kv = mg.nn.ropeInsertShared(kvh, 16, ckv, 32, 0, 10000); // [2, 4, 5, 40]
 * const k = kv.slice(3, 0, 24), v = kv.slice(3, 24, 40);
 * console.log(k.shape, v.shape); // [2, 4, 5, 24] [2, 4, 5, 16]
 * ```
 */
export function ropeInsertShared(
  x: Tensor,
  at: number,
  shared: Tensor,
  start: number,
  positions: number | Tensor,
  thetaOrInvFreq: number | Tensor,
  options: RopeOptions = {},
): Tensor {
  const op = "ropeInsertShared";
  for (const [name, t] of [["x", x], ["shared", shared]] as const) {
    if (!(t instanceof Tensor)) throw new MoongradError(op, `${name} must be a Tensor`);
    t.storage(op);
  }
  const R = x.rank;
  const W = x.shape[R - 1];
  const Ws = shared.shape[shared.rank - 1];
  if (!isFloat(x.dtype) || R < 3 || !Number.isInteger(at) || at < 0 || at > W) {
    throw new MoongradError(
      op,
      `x must be f32/f16 [..., H, T, W] and at an integer in [0, W], got ${x.dtype} ` +
        `${fmtShape(x.shape)} and at = ${at}`,
    );
  }
  const ha = R - 3;
  const sharedShape = [...x.shape.slice(0, ha), ...x.shape.slice(ha + 1, -1), Ws];
  if (
    shared.dtype !== x.dtype || shared.rank !== R - 1 ||
    shared.shape.some((d, i) => d !== sharedShape[i]) || !Number.isInteger(start) ||
    start < 0 || start >= Ws || (Ws - start) % 2 !== 0
  ) {
    throw new MoongradError(
      op,
      `shared must be ${x.dtype} [..., T, Ws] (x ${fmtShape(x.shape)} without its head axis ` +
        `${ha}) and start an integer in [0, Ws) with Ws − start even, got ${shared.dtype} ` +
        `${fmtShape(shared.shape)} and start = ${start}`,
    );
  }
  // The rotated columns of shared, broadcast over the heads (stride 0): [..., H, T, d].
  const ss = shared.strides;
  const rot = shared.view(
    [...x.shape.slice(0, -1), Ws - start],
    [...ss.slice(0, ha), 0, ...ss.slice(ha)],
    shared.offset + start * ss[ss.length - 1],
  );
  let args;
  try {
    args = ropeArgs(op, rot, positions, thetaOrInvFreq, options);
  } catch (e) {
    rot.dispose();
    throw e;
  }
  const { inv, owned, interleaved, factor } = args;
  const out = rotate(rot, positions, inv, 1, interleaved, factor, x, at);
  rot.dispose();
  const saved = positions instanceof Tensor ? [inv, positions] : [inv];
  record(out, op, [x, shared], (g, _needs, [si, sp]) => {
    const dx = emptyLike(x);
    const ds = Tensor.empty(shared.shape, shared.dtype);
    insertGrad(g, dx, ds, at, start, sp ?? (positions as number), si, interleaved, factor);
    return [dx, ds];
  }, saved);
  if (owned) inv.dispose();
  return out;
}
