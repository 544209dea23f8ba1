/**
 * Softmax and log-softmax along any axis, each one fused kernel per row with its fused
 * backward, plus the row-kernel machinery that `ops/loss.ts` shares.
 *
 * Rows are addressed with strides, never copied: the reduced axis keeps its stride and the
 * other ("outer") axes are merged where the layout allows, so a transposed or sliced input
 * and a non-last axis cost no permute + contiguous pass. Each row gets a power-of-two group
 * of lanes (up to a whole workgroup for long rows; several rows share a workgroup for medium
 * ones): an online max/sum per lane, then a shared-memory tree over the row's lanes. Short
 * rows (and many strided rows, which are then read coalesced across threads) get one thread
 * each, and so does every row on a CPU adapter from CPU_THREAD_ROWS rows (see `rowLanes`:
 * llvmpipe runs each barrier of the tree as a coroutine switch). f16 inputs are computed in
 * f32. Stability: the row maximum is subtracted before every `exp`, so logits of ±1e4 give
 * exact 0/1 probabilities, never Inf or NaN. A row that is all −Inf, or holds +Inf or NaN,
 * gives NaN (as in PyTorch), detected with bit tests that a NaN-assuming compiler cannot fold
 * (see `rowMaxSum`).
 */
import { isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { deviceInfo } from "../core/device.ts";
import { CPU_THREAD_WG, cpuRowThreads } from "./cpu_rows.ts";
import { type Binding, kernel } from "../core/kernel.ts";
import {
  fitLength,
  type ParamBlock,
  type ParamDecls,
  params,
  type ParamValues,
} from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { numel } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { grid1d, linearId } from "./grid.ts";

/** Threads per workgroup of every row kernel. */
export const ROW_WG = 128;
/** Rows at most this long are handled by one thread each. */
export const SHORT_ROW = 32;
/** With a strided reduced axis and at least this many rows, one thread per row is used. */
const STRIDED_ROWS = 2048;
/** Elements each lane should handle at least, when picking the lanes per row. */
const PER_LANE = 4;

/**
 * Who owns a row: "lanes" (a power-of-two group of threads, reducing in workgroup memory) or
 * "thread" (one thread, no workgroup memory, no barrier).
 */
export type RowLayout = "lanes" | "thread";
let layoutOverride: RowLayout | null = null;

/**
 * Overrides the row layout of the softmax and cross-entropy kernels (tests run both on one
 * adapter): "thread" gives every row one thread, "lanes" the rule without its CPU-adapter
 * clause (short and many strided rows still get one thread); null restores the default.
 * Returns the previous override. Not part of the public API (not exported by mod.ts).
 *
 * @example Force one thread per row, then restore the default
 * ```ts
 * import { setRowLayout } from "./softmax.ts";
 * const previous = setRowLayout("thread");
 * setRowLayout(previous);
 * ```
 */
export function setRowLayout(layout: RowLayout | null): RowLayout | null {
  const previous = layoutOverride;
  layoutOverride = layout;
  return previous;
}

/** One tensor addressed row by row: strides of the outer axes, stride along the row, offset. */
export interface RowOperand {
  /** Strides of the outer axes (one per outer axis; 0 broadcasts). */
  outer: readonly number[];
  /** Stride along the reduced axis (0 when the operand has one value per row). */
  axis: number;
  /** Element offset of the first element. */
  offset: number;
}

/** The operand view of `t` whose axis `axis` is the row axis (outer strides = the others). */
export function rowOperand(t: Tensor, axis: number): RowOperand {
  if (t.rank === 0) return { outer: [], axis: 0, offset: t.offset };
  return {
    outer: t.strides.filter((_, i) => i !== axis),
    axis: t.strides[axis],
    offset: t.offset,
  };
}

/** The operand view of a tensor holding one value per row (its shape is the outer shape). */
export function perRowOperand(t: Tensor, outerRank: number): RowOperand {
  const outer = t.rank === 0 ? new Array<number>(outerRank).fill(0) : [...t.strides];
  return { outer, axis: 0, offset: t.offset };
}

/** The parameters every row kernel has, before its own (`extras`) and the operand views. */
type RowDecls = {
  readonly rows: "u32";
  readonly n: "u32";
  readonly k: "u32";
  readonly dims: readonly ["u32", number];
  readonly strides: readonly ["u32", number];
  readonly axis: readonly ["u32", number];
  readonly offsets: readonly ["u32", number];
};

/** A row kernel's parameter declaration with its operand count and largest merged outer rank. */
export interface RowParams<E extends ParamDecls> {
  /** The declaration: rows, n, k, the extras, then dims[K], strides[T·K], axis[T], offsets[T]. */
  readonly block: ParamBlock<RowDecls & E>;
  /** Operands (T). */
  readonly operands: number;
  /** Largest merged outer rank (K): what fits in the block. */
  readonly maxRank: number;
}

/**
 * Declares a row kernel's parameters: w0 rows, w1 row length, w2 merged outer rank k, the
 * kernel's `extras`, then the outer sizes (`dims`), per operand its outer strides (K apart,
 * in `strides`), its row stride (`axis`) and its offset (`offsets`); K is the largest outer
 * rank that fits in the block.
 */
export function rowBlock<const E extends ParamDecls>(
  name: string,
  operands: number,
  extras: E,
): RowParams<E> {
  const extraWords = Object.values(extras).reduce(
    (s: number, d) => s + (typeof d === "string" ? 1 : d[1]),
    0,
  );
  const K = fitLength(3 + extraWords + 2 * operands, operands + 1);
  const decls = {
    rows: "u32",
    n: "u32",
    k: "u32",
    ...extras,
    dims: ["u32", K],
    strides: ["u32", operands * K],
    axis: ["u32", operands],
    offsets: ["u32", operands],
  } as unknown as RowDecls & E;
  return { block: params(name, decls), operands, maxRank: K };
}

/**
 * Packs a row kernel's parameters. Outer axes of size 1 are dropped and adjacent axes merged
 * when every operand allows it, so the common contiguous case has k ≤ 1.
 */
export function rowParams<E extends ParamDecls>(
  R: RowParams<E>,
  op: string,
  outerShape: readonly number[],
  n: number,
  operands: readonly RowOperand[],
  extras: ParamValues<E>,
): Uint32Array {
  if (operands.length !== R.operands) {
    throw new Error(`${op}: row kernel declared ${R.operands} operands, got ${operands.length}`);
  }
  const dims: number[] = [];
  const strides: number[][] = operands.map(() => []);
  outerShape.forEach((d, i) => {
    if (d === 1) return;
    const last = dims.length - 1;
    const canMerge = last >= 0 &&
      operands.every((o, t) => strides[t][last] === o.outer[i] * d);
    if (canMerge) {
      dims[last] *= d;
      operands.forEach((o, t) => strides[t][last] = o.outer[i]);
    } else {
      dims.push(d);
      operands.forEach((o, t) => strides[t].push(o.outer[i]));
    }
  });
  const k = dims.length;
  if (k > R.maxRank) {
    throw new MoongradError(
      op,
      `outer shape ${fmtShape(outerShape)} has ${k} non-mergeable axes; one kernel takes at ` +
        `most ${R.maxRank} (make the input contiguous first)`,
    );
  }
  const flat = new Array<number>(R.operands * R.maxRank).fill(0);
  strides.forEach((s, t) => s.forEach((v, d) => (flat[t * R.maxRank + d] = v)));
  return R.block.pack({
    rows: numel(outerShape),
    n,
    k,
    ...extras,
    dims,
    strides: flat,
    axis: operands.map((o) => o.axis),
    offsets: operands.map((o) => o.offset),
  } as unknown as ParamValues<RowDecls & E>);
}

/**
 * WGSL helpers of a row kernel declared by `R` (rowBlock) with `lanes` threads per
 * row: `row_off(row, t)` (the element offset of row `row` of operand `t`), `ax_stride(t)`,
 * and the cross-lane reductions `reduce_ms` (online max/sum pairs) and `reduce_sum` over the
 * row's segment of shared memory (the identity when `lanes` is 1).
 */
export function rowPrelude<E extends ParamDecls>(R: RowParams<E>, lanes: number): string {
  const common = `
const NEG_MAX: f32 = -0x1.fffffep+127f; // the lowest finite f32 (Tint rejects anything beyond)
fn row_off(row: u32, t: u32) -> u32 {
  var rem = row;
  var off = p_offsets(t);
  for (var d = i32(p_k()) - 1; d >= 0; d--) {
    let dim = p_dims(u32(d));
    off += (rem % dim) * p_strides(t * ${R.maxRank}u + u32(d));
    rem /= dim;
  }
  return off;
}
fn ax_stride(t: u32) -> u32 { return p_axis(t); }
fn combine_ms(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}`;
  if (lanes === 1) {
    return common + `
fn reduce_ms(v: vec2<f32>, lidx: u32, lane: u32) -> vec2<f32> { return v; }
fn reduce_sum(v: f32, lidx: u32, lane: u32) -> f32 { return v; }`;
  }
  // Each row owns `lanes` consecutive slots; every thread runs the same loop, so the
  // barriers stay in uniform control flow even for the padding rows past the last one.
  return common + `
var<workgroup> red_a: array<f32, ${ROW_WG}>;
var<workgroup> red_b: array<f32, ${ROW_WG}>;
fn reduce_ms(v: vec2<f32>, lidx: u32, lane: u32) -> vec2<f32> {
  red_a[lidx] = v.x;
  red_b[lidx] = v.y;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) {
      let r = combine_ms(vec2<f32>(red_a[lidx], red_b[lidx]),
                         vec2<f32>(red_a[lidx + s], red_b[lidx + s]));
      red_a[lidx] = r.x;
      red_b[lidx] = r.y;
    }
    workgroupBarrier();
  }
  let out = vec2<f32>(red_a[lidx - lane], red_b[lidx - lane]);
  workgroupBarrier();
  return out;
}
fn reduce_sum(v: f32, lidx: u32, lane: u32) -> f32 {
  red_a[lidx] = v;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { red_a[lidx] = red_a[lidx] + red_a[lidx + s]; }
    workgroupBarrier();
  }
  let out = red_a[lidx - lane];
  workgroupBarrier();
  return out;
}`;
}

/**
 * WGSL that defines `row`, `valid` (false on padding rows), `lane`, `step` (= lanes) and `n`
 * (0 on padding rows, so their loops do nothing). With one lane per row it returns early
 * past the last row instead.
 */
export function rowSetup(lanes: number): string {
  if (lanes === 1) {
    return `
  let row = ${linearId(rowWorkgroup(1))};
  if (row >= p_rows()) { return; }
  let valid = true;
  let lane = 0u;
  let step = 1u;
  let n = p_n();`;
  }
  return `
  let lane = lidx % ${lanes}u;
  let row = (wid.y * nwg.x + wid.x) * ${ROW_WG / lanes}u + lidx / ${lanes}u;
  let valid = row < p_rows();
  let step = ${lanes}u;
  let n = select(0u, p_n(), valid);`;
}

/**
 * WGSL loop computing the row's online (max, sum of exp) pair of operand 0 read from
 * binding `x` into `ms` (max in ms.x, Σ exp(v − max) in ms.y), combined across the
 * workgroup. Defines `xb` and `xs` (row offset and stride of operand 0). A NaN or +Inf in the
 * row makes ms.y NaN (PyTorch's softmax of such a row is all NaN: +Inf − +Inf), found by one
 * bit test per value; a row of −Inf only leaves ms.y = 0.
 */
export function rowMaxSum(x: string): string {
  return `
  let xb = row_off(row, 0u);
  let xs = ax_stride(0u);
  var m = NEG_MAX;
  var s = 0.0;
  for (var j = lane; j < n; j += step) {
    let v = f32(${x}[xb + j * xs]);
    if (mg_isnan(v) || bitcast<u32>(v) == 0x7f800000u) { s = mg_nan(); }
    else if (v > m) { s = s * exp(m - v) + 1.0; m = v; } else { s += exp(v - m); }
  }
  let ms = reduce_ms(vec2<f32>(m, s), lidx, lane);`;
}

/**
 * `rowMaxSum` for one thread over a unit-stride row of vec4 (binding `x` of vec4, the row's
 * offset and length multiples of 4): defines `xb` (the row's first vec4) and `ms`. Four values
 * per step and no branch: the new maximum is taken over the four, the sum rescaled once and
 * the four exps added pairwise. A NaN or +Inf makes ms.y NaN (bit tests, as in `rowMaxSum`);
 * −Inf adds 0, and the maximum never drops below NEG_MAX, so a row of −Inf leaves ms.y = 0.
 */
export function rowMaxSum4(x: string): string {
  return `
  let xb = row_off(row, 0u) / 4u;
  var m = NEG_MAX;
  var s = 0.0;
  for (var j = 0u; j < n / 4u; j++) {
    let v = vec4<f32>(${x}[xb + j]);
    let bits = bitcast<vec4<u32>>(v);
    let bad = any((bits & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u)) ||
      any(bits == vec4<u32>(0x7f800000u));
    let mn = max(m, max(max(v.x, v.y), max(v.z, v.w)));
    let e = exp(v - vec4<f32>(mn));
    s = select(s * exp(m - mn) + ((e.x + e.y) + (e.z + e.w)), mg_nan(), bad);
    m = select(mn, m, bad);
  }
  let ms = vec2<f32>(m, s);`;
}

/**
 * Threads per row (a power of two ≤ ROW_WG): 1 for short rows and for many strided rows
 * (then neighbouring threads read neighbouring memory), else enough lanes for about
 * PER_LANE elements each, so a workgroup packs ROW_WG / lanes rows and medium rows do not
 * leave most of a workgroup idle. On CPU adapters every row gets one thread from
 * CPU_THREAD_ROWS rows: there adjacent threads are the SIMD lanes of one CPU thread, each
 * storage access is a per-lane loop however the threads are laid out, and what lanes would add
 * is the reduction tree, whose barriers llvmpipe runs as coroutine switches (rows longer than
 * CPU_THREAD_MAX_N keep their lanes, for the accuracy of the sum). Measured on
 * lavapipe (2 cores, f32 softmax, 8 per wait, medians of 10, alternating in one process,
 * 2026-12-03): 1024 × 1024 122.8–127.1 → 48.1–49.0 ms, 256 × 1024 40.4–41.5 → 22.4–22.7 ms;
 * 64 × 4096 and 128 × 8192 tie with 128-thread workgroups and win with CPU_THREAD_WG-thread
 * ones (128 × 8192: 54.2–55.6 → 33.9–35.1 ms, alternating processes). SwiftShader (Dawn)
 * gains more: 1024 × 1024 2512–2736 → 230–294 ms, 128 × 8192 2191–2514 → 229–350 ms. The
 * softmax forward then reads vec4 rows without a branch (`rowMaxSum4`): 1024 × 1024 against
 * lanes 116.0–119.4 → 29.6–31.7 ms (lavapipe), 2306–2873 → 113–125 ms (SwiftShader).
 */
export function rowLanes(n: number, rows: number, axisStride: number): number {
  if (layoutOverride === "thread") return 1;
  if (n <= SHORT_ROW || (axisStride !== 1 && rows >= STRIDED_ROWS)) return 1;
  if (layoutOverride === null && cpuRowThreads(rows, n)) return 1;
  let lanes = 8;
  while (lanes < ROW_WG && lanes * PER_LANE < n) lanes *= 2;
  return lanes;
}

/**
 * Threads per workgroup of a row kernel with `lanes` threads per row: ROW_WG, or
 * CPU_THREAD_WG for one thread per row on a CPU adapter.
 */
export function rowWorkgroup(lanes: number): number {
  return lanes === 1 && deviceInfo().isFallbackAdapter ? CPU_THREAD_WG : ROW_WG;
}

/** Launch grid of a row kernel with `lanes` threads per row. */
export function rowGrid(rows: number, lanes: number): [number, number] {
  return lanes === 1
    ? grid1d(rows, rowWorkgroup(1))
    : grid1d(Math.ceil(rows / (ROW_WG / lanes)), 1);
}

function checkSoftmaxInput(op: string, x: Tensor, axis: number): number {
  if (!(x instanceof Tensor)) throw new MoongradError(op, `x must be a Tensor, got ${typeof x}`);
  x.storage(op);
  if (!isFloat(x.dtype)) {
    throw new MoongradError(
      op,
      `x has dtype ${x.dtype}; expected f32 or f16 (cast first), shape ${fmtShape(x.shape)}`,
    );
  }
  const rank = x.rank;
  const lo = -Math.max(rank, 1);
  const hi = Math.max(rank, 1) - 1;
  if (!Number.isInteger(axis) || axis < lo || axis > hi) {
    throw new MoongradError(
      op,
      `axis ${axis} is out of range for x of shape ${fmtShape(x.shape)} (expected ${lo}..${hi})`,
    );
  }
  return rank === 0 ? 0 : axis < 0 ? axis + rank : axis;
}

function outerShapeOf(x: Tensor, axis: number): number[] {
  return x.shape.filter((_, i) => i !== axis);
}

/** Softmax forward rows: x and y. */
const FORWARD = rowBlock("softmax", 2, {});
/** Softmax backward rows: g, y and dx. */
const BACKWARD = rowBlock("softmax_grad", 3, {});

function forward(op: "softmax" | "logSoftmax", x: Tensor, axis: number): Tensor {
  const out = Tensor.empty(x.shape, x.dtype);
  const n = x.rank === 0 ? 1 : x.shape[axis];
  const outer = outerShapeOf(x, axis);
  const rows = numel(outer);
  if (out.size === 0) return out;
  const xo = rowOperand(x, axis);
  const yo = rowOperand(out, axis);
  const lanes = rowLanes(n, rows, xo.axis);
  const t = wgslType(x.dtype);
  // One thread per row over unit-stride rows aligned to 4: vec4 reads and writes.
  const v4 = lanes === 1 && n % 4 === 0 &&
    [xo, yo].every((o) =>
      o.axis === 1 && o.offset % 4 === 0 && o.outer.every((st) => st % 4 === 0)
    );
  // ms.y is NaN for a row holding NaN or +Inf and 0 for a row of −Inf: both give NaN rows.
  const write = op === "softmax" ? "exp(v - ms.x) / ms.y" : "v - ms.x - mg_log(ms.y)";
  const vt = v4 ? `vec4<${t}>` : t;
  const k = kernel({
    name: `${op}_l${lanes}${v4 ? "_vec4" : ""}`,
    bindings: [
      { name: "x", type: vt, access: "read" },
      { name: "y", type: vt, access: "read_write" },
    ],
    workgroupSize: [rowWorkgroup(lanes)],
    params: FORWARD.block,
    prelude: rowPrelude(FORWARD, lanes),
    body: v4
      ? `${rowSetup(lanes)}${rowMaxSum4("x")}
  let yb = row_off(row, 1u) / 4u;
  for (var j = 0u; j < n / 4u; j++) {
    let v = vec4<f32>(x[xb + j]);
    y[yb + j] = ${vt}(${write});
  }`
      : `${rowSetup(lanes)}${rowMaxSum("x")}
  let yb = row_off(row, 1u);
  let ys = ax_stride(1u);
  for (var j = lane; j < n; j += step) {
    let v = f32(x[xb + j * xs]);
    y[yb + j * ys] = ${t}(${write});
  }`,
  });
  const words = rowParams(FORWARD, op, outer, n, [xo, yo], {});
  dispatch(k, [x.storage(op).buf, out.storage(op).buf], words, rowGrid(rows, lanes));
  return out;
}

/**
 * The fused backward of softmax (dx = y ⊙ (g − Σ g⊙y)) or log-softmax
 * (dx = g − exp(y) ⊙ Σ g) from the saved output `y`: one kernel, one pass per row.
 */
function backward(op: "softmax" | "logSoftmax", g: Tensor, y: Tensor, axis: number): Tensor {
  const dx = Tensor.empty(y.shape, y.dtype);
  const n = y.rank === 0 ? 1 : y.shape[axis];
  const outer = outerShapeOf(y, axis);
  const rows = numel(outer);
  if (dx.size === 0) return dx;
  const go = rowOperand(g, axis);
  const lanes = rowLanes(n, rows, go.axis);
  const isLog = op === "logSoftmax";
  const bindings: Binding[] = [
    { name: "g", type: wgslType(g.dtype), access: "read" },
    { name: "y", type: wgslType(y.dtype), access: "read" },
    { name: "dx", type: wgslType(y.dtype), access: "read_write" },
  ];
  const k = kernel({
    name: `${op}_grad_l${lanes}`,
    bindings,
    workgroupSize: [rowWorkgroup(lanes)],
    params: BACKWARD.block,
    prelude: rowPrelude(BACKWARD, lanes),
    body: `${rowSetup(lanes)}
  let gb = row_off(row, 0u);
  let gs = ax_stride(0u);
  let yb = row_off(row, 1u);
  let ys = ax_stride(1u);
  let db = row_off(row, 2u);
  let ds = ax_stride(2u);
  var acc = 0.0;
  for (var j = lane; j < n; j += step) {
    acc += ${isLog ? "f32(g[gb + j * gs])" : "f32(g[gb + j * gs]) * f32(y[yb + j * ys])"};
  }
  let tot = reduce_sum(acc, lidx, lane);
  for (var j = lane; j < n; j += step) {
    let gv = f32(g[gb + j * gs]);
    let yv = f32(y[yb + j * ys]);
    dx[db + j * ds] = ${wgslType(y.dtype)}(${isLog ? "gv - mg_exp(yv) * tot" : "yv * (gv - tot)"});
  }`,
  });
  const words = rowParams(
    BACKWARD,
    `${op}_grad`,
    outer,
    n,
    [go, rowOperand(y, axis), rowOperand(dx, axis)],
    {},
  );
  const name = `${op}_grad`;
  dispatch(
    k,
    [g.storage(name).buf, y.storage(name).buf, dx.storage(name).buf],
    words,
    rowGrid(rows, lanes),
  );
  return dx;
}

function softmaxOp(op: "softmax" | "logSoftmax", x: Tensor, axis: number): Tensor {
  const ax = checkSoftmaxInput(op, x, axis);
  const out = forward(op, x, ax);
  // The vjp reads the retained saved handle, so disposing `out` early is safe.
  record(out, op, [x], (g, needs, [y]) => {
    return [needs[0] ? backward(op, g, y, ax) : null];
  }, [out]);
  return out;
}

/**
 * Softmax along `axis` (last by default): exp(x − max) / Σ exp(x − max), one fused kernel
 * per row. f32 or f16 (computed in f32); any layout, no copy.
 *
 * @example Probabilities over the last axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const p = mg.softmax(mg.tensor([[0, 0], [0, Math.log(3)]]));
 * console.log(await p.toArray()); // [[0.5, 0.5], [0.25, 0.75]] (to f32 precision)
 * ```
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  return softmaxOp("softmax", x, axis);
}

/**
 * Log-softmax along `axis` (last by default): x − max − log Σ exp(x − max), one fused kernel
 * per row. f32 or f16 (computed in f32); any layout, no copy.
 *
 * @example Log-probabilities, stable for large logits
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.logSoftmax(mg.tensor([1000, 1000])).toArray()); // [-0.693…, -0.693…]
 * ```
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return softmaxOp("logSoftmax", x, axis);
}
