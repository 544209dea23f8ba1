/**
 * Reductions over any set of axes: sum, mean, max, min, argmax, variance, and `sumTo` (the
 * broadcast-gradient reduction). The reduced axes are moved innermost (a copy only when the
 * layout needs it) and each output row is reduced by one workgroup, or by one thread when
 * rows are short, and on CPU adapters when there are many (see `rowThreads`). On CPU adapters
 * the leading axes of a contiguous tensor are reduced in place instead, a thread per column
 * (see `columnThreads`). NaN propagates as in PyTorch: sums (and so mean and variance) by
 * IEEE arithmetic, max/min/argmax/argmin by a bit test per value (NaN wins, the first NaN's
 * index).
 */
import { CPU_THREAD_MAX_N, CPU_THREAD_ROWS, cpuRowThreads } from "./cpu_rows.ts";
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { contiguousStrides, normalizeAxes, normalizeAxis } from "../core/shape.ts";
import { Tensor, type VarOptions } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { grid1d, linearId } from "./grid.ts";
import { computeType, pointwise } from "./pointwise.ts";
import { contiguous, div, mul, square, sub } from "./elementwise.ts";
import { expand, permute, reshape } from "./layout.ts";

type ReduceKind = "sum" | "max" | "min" | "argmax" | "argmin";

const WG = 64;
/** Rows at most this long are reduced by one thread each instead of one workgroup. */
const SHORT_ROW = 16;

/** Who reduces a row: one workgroup (a tree over its lanes) or one thread (in order). */
export type ReduceLayout = "workgroup" | "thread";
let layoutOverride: ReduceLayout | null = null;

/**
 * Overrides who reduces a row (tests run both on one adapter): "thread" for every row,
 * "workgroup" for every row longer than SHORT_ROW; null restores the default (`rowThreads`).
 * Returns the previous override. Not part of the public API (not exported by mod.ts).
 *
 * @example Reduce every row with one thread, then restore the default
 * ```ts
 * import { setReduceLayout } from "./reduce.ts";
 * const previous = setReduceLayout("thread");
 * setReduceLayout(previous);
 * ```
 */
export function setReduceLayout(layout: ReduceLayout | null): ReduceLayout | null {
  const previous = layoutOverride;
  layoutOverride = layout;
  return previous;
}

/**
 * True when each of `rows` rows of `n` values is reduced by one thread: short rows, and on CPU
 * adapters CPU_THREAD_ROWS rows or more of at most CPU_THREAD_MAX_N. There adjacent threads are
 * one CPU thread's SIMD lanes and every storage read is a per-lane loop however the threads are
 * laid out; what a workgroup adds is its tree's barriers, which llvmpipe runs as coroutine
 * switches. Measured on lavapipe (2 cores, 8 reductions per wait, medians of 12, alternating in
 * one process, 2026-12-03): sum over the last axis of [1024, 1024] 32.5 → 18.6 ms, max 41.5 →
 * 18.6 ms; [256, 128] sum 15.7 → 12.7 ms, max 17.3 → 12.8 ms. SwiftShader (Dawn), the same
 * [1024, 1024] runs: sum 1922 → 62 ms, max 2195 → 82 ms.
 */
function rowThreads(rows: number, n: number): boolean {
  if (layoutOverride === "thread" || n <= SHORT_ROW) return true;
  return layoutOverride === null && cpuRowThreads(rows, n);
}

/** Row reductions: rows, row length, element offset of the first row, the scale of a sum. */
const ROWS = params("reduce", { rows: "u32", n: "u32", offset: "u32", scale: "f32" });

interface Plan {
  rows: Tensor; // contiguous [outer, inner] data (maybe a copy of x), or [inner, outer]
  outer: number;
  inner: number;
  /** True when `rows` is x as it lies, [inner, outer]: the output's values are its columns. */
  columns: boolean;
  outShape: number[]; // with keepDims applied
}

/**
 * True when the `outer` columns of a contiguous [inner, outer] tensor are reduced in place, a
 * thread per column (no transposing copy): on CPU adapters (see `rowThreads`) from
 * CPU_THREAD_ROWS columns of at most CPU_THREAD_MAX_N values. Each thread reads with a stride
 * of `outer`, neighbouring threads neighbouring values. Measured (8 per wait, [1024, 1024]
 * summed over axis 0, medians of 12, alternating in one process, 2026-12-03): lavapipe
 * 121.2–135.2 → 22.7–25.4 ms, SwiftShader 2395 → 64.8 ms.
 */
function columnThreads(columns: number, n: number): boolean {
  if (layoutOverride === "workgroup") return false;
  if (layoutOverride === "thread") return columns >= CPU_THREAD_ROWS && n <= CPU_THREAD_MAX_N;
  return cpuRowThreads(columns, n);
}

function plan(x: Tensor, axes: number[], keepDims: boolean): Plan {
  const kept = [...x.shape.keys()].filter((i) => !axes.includes(i));
  const order = [...kept, ...axes];
  const inner = axes.reduce((n, a) => n * x.shape[a], 1);
  const outer = kept.reduce((n, a) => n * x.shape[a], 1);
  const isIdentity = order.every((a, i) => a === i);
  const outShape = keepDims
    ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d))
    : kept.map((a) => x.shape[a]);
  // Leading axes of a contiguous tensor: x is [inner, outer] as it lies.
  const leading = axes.length > 0 && axes.every((a, i) => a === i) && kept.length > 0;
  if (leading && x.isContiguous && inner > 0 && columnThreads(outer, inner)) {
    return { rows: x, outer, inner, columns: true, outShape };
  }
  let rows: Tensor;
  if (isIdentity && x.isContiguous) rows = x;
  else {
    const p = permute(x, order);
    rows = contiguous(p);
    p.dispose();
  }
  return { rows, outer, inner, columns: false, outShape };
}

function reduceRows(
  op: string,
  kind: ReduceKind,
  rows: Tensor,
  outer: number,
  inner: number,
  scale: number,
  columns = false,
): Tensor {
  const isArg = kind === "argmax" || kind === "argmin";
  const outDtype: DType = isArg ? "i32" : rows.dtype;
  const out = Tensor.empty([outer], outDtype);
  if (outer === 0) return out;
  const ct = computeType(rows.dtype);
  const t = wgslType(rows.dtype);
  const init = kind === "sum" ? `${ct}(0)` : `${ct}(x[base])`;
  const better = kind === "max" || kind === "argmax" ? ">" : "<";
  // Floats: NaN wins (PyTorch), the first NaN's index for arg*. `nan` is sticky, so each value
  // costs one bit test and NaN never reaches a comparison the compiler may assume NaN-free.
  const nanAware = kind !== "sum" && isFloat(rows.dtype);
  const combine = kind === "sum" ? "acc = acc + v;" : nanAware
    ? `if (!nan) {
      if (mg_isnan(v)) { acc = v; ai = j; nan = true; } else if (v ${better} acc) { acc = v; ai = j; }
    }`
    : `if (v ${better} acc) { acc = v; ai = j; }`;
  const finish = isArg
    ? "i32(ai)"
    : kind === "sum" && isFloat(rows.dtype)
    ? `${t}(acc * p_scale())`
    : `${t}(acc)`;
  const short = columns || rowThreads(outer, inner);
  const words = ROWS.pack({ rows: outer, n: inner, offset: rows.offset, scale });
  const bindings = [
    { name: "x", type: t, access: "read" as const },
    { name: "out", type: wgslType(outDtype), access: "read_write" as const },
  ];
  if (short) {
    const k = kernel({
      name: `${op}_${columns ? "columns" : "thread"}`,
      bindings,
      workgroupSize: [WG],
      params: ROWS,
      pairable: true,
      body: `
  let row = ${linearId(WG)};
  if (row >= p_rows()) { return; }
  let n = p_n();
  let base = p_offset() + row${columns ? "" : " * n"};
  var acc = ${init};
  var ai = 0u;
  ${nanAware ? "var nan = mg_isnan(acc);" : ""}
  for (var j = ${kind === "sum" ? "0u" : "1u"}; j < n; j++) {
    let v = ${ct}(x[base + j${columns ? " * p_rows()" : ""}]);
    ${combine}
  }
  out[row] = ${finish};`,
    });
    dispatch(k, [rows.storage(op).buf, out.storage(op).buf], words, grid1d(outer, WG));
    return out;
  }
  const merge = kind === "sum"
    ? "sv[lidx] = sv[lidx] + sv[lidx + s];"
    : `let o = sv[lidx + s]; let oi = si[lidx + s]; let a = sv[lidx]; let ai2 = si[lidx];
      ${
      nanAware
        ? `let on = mg_isnan(o); let an = mg_isnan(a);
      let take = select(!an && (o ${better} a || (o == a && oi < ai2)), !an || oi < ai2, on);`
        : `let take = o ${better} a || (o == a && oi < ai2);`
    }
      if (take) { sv[lidx] = o; si[lidx] = oi; }`;
  const k = kernel({
    name: `${op}_rows`,
    bindings,
    workgroupSize: [WG],
    params: ROWS,
    pairable: true,
    prelude: `var<workgroup> sv: array<${ct}, ${WG}>;\nvar<workgroup> si: array<u32, ${WG}>;`,
    body: `
  let row = wid.y * nwg.x + wid.x;
  if (row >= p_rows()) { return; }
  let n = p_n();
  let base = p_offset() + row * n;
  let first = min(lidx, n - 1u);
  var acc = ${kind === "sum" ? `${ct}(0)` : `${ct}(x[base + first])`};
  var ai = first;
  ${nanAware ? "var nan = mg_isnan(acc);" : ""}
  for (var j = lidx; j < n; j += ${WG}u) {
    let v = ${ct}(x[base + j]);
    ${combine}
  }
  sv[lidx] = acc;
  si[lidx] = ai;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lidx < s) {
      ${merge}
    }
    workgroupBarrier();
  }
  if (lidx == 0u) {
    acc = sv[0];
    ai = si[0];
    out[row] = ${finish};
  }`,
  });
  const [gx, gy] = grid1d(outer, 1);
  dispatch(k, [rows.storage(op).buf, out.storage(op).buf], words, [gx, gy]);
  return out;
}

function reduce(
  op: string,
  kind: ReduceKind,
  x: Tensor,
  axes: number[],
  keepDims: boolean,
  scale = 1,
): Tensor {
  const { rows, outer, inner, columns, outShape } = plan(x, axes, keepDims);
  if (inner === 0 && kind !== "sum") {
    if (rows !== x) rows.dispose();
    throw new MoongradError(op, `cannot reduce over an empty axis (shape ${fmtShape(x.shape)})`);
  }
  const flat = reduceRows(op, kind, rows, outer, inner, scale, columns);
  if (rows !== x) rows.dispose();
  const out = flat.view(outShape, contiguousStrides(outShape), 0);
  flat.dispose();
  return out;
}

function checkInput(op: string, x: Tensor, allowInt: boolean): void {
  if (!(x instanceof Tensor)) throw new MoongradError(op, `x must be a Tensor, got ${typeof x}`);
  x.storage(op);
  if (x.dtype === "bool" || (!allowInt && !isFloat(x.dtype))) {
    throw new MoongradError(
      op,
      `x has dtype ${x.dtype}; expected ${
        allowInt ? "f32, f16 or i32" : "f32 or f16"
      } (cast first)`,
    );
  }
}

/** Normalised axes; on a rank-0 tensor axis 0 is accepted and reduces over nothing. */
function axesOf(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  return normalizeAxes(op, axes, rank).filter((a) => a < rank);
}

/** Shape of a reduction's output with the reduced axes kept as size 1. */
function keptShape(x: Tensor, axes: number[]): number[] {
  return x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/**
 * Sum over `axes` (all when omitted); keepDims leaves them as size 1.
 *
 * @example Sum everything, or over axes
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2, 3], [4, 5, 6]]);
 * console.log(await mg.sum(x).item()); // 21
 * console.log(await mg.sum(x, 0).toArray()); // [5, 7, 9]
 * console.log(await x.sum(1, true).toArray()); // [[6], [15]]
 * ```
 */
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  checkInput("sum", x, true);
  const ax = axesOf("sum", axes, x.rank);
  const out = reduce("sum", "sum", x, ax, keepDims);
  return record(out, "sum", [x], (g) => {
    const gk = reshape(g, keptShape(x, ax));
    const e = expand(gk, x.shape);
    const c = contiguous(e);
    gk.dispose();
    e.dispose();
    return [c];
  });
}

/**
 * Mean over `axes` (all when omitted).
 *
 * @example Mean over an axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2, 3], [4, 5, 6]]);
 * console.log(await mg.mean(x, 1).toArray()); // [2, 5]
 * ```
 */
export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  checkInput("mean", x, false);
  const ax = axesOf("mean", axes, x.rank);
  const count = ax.reduce((n, a) => n * x.shape[a], 1);
  const out = reduce("mean", "sum", x, ax, keepDims, 1 / count);
  return record(out, "mean", [x], (g) => {
    const gk = reshape(g, keptShape(x, ax));
    const grad = pointwise(
      "mean_grad",
      [gk, { scalar: 1 / count, dtype: g.dtype }],
      x.shape,
      g.dtype,
      "v0 * v1",
    );
    gk.dispose();
    return [grad];
  });
}

function extremum(
  op: "max" | "min",
  x: Tensor,
  axes: number | readonly number[] | undefined,
  keepDims: boolean,
): Tensor {
  checkInput(op, x, true);
  const ax = axesOf(op, axes, x.rank);
  const out = reduce(op, op, x, ax, keepDims);
  return record(out, op, [x], (g, _needs, [xs, os]) => {
    // The gradient goes to every position equal to the extremum, shared equally among ties;
    // in a row whose extremum is NaN, among its NaN positions (torch.max()'s rule).
    const ok = reshape(os, keptShape(x, ax));
    const maskF = pointwise(
      `${op}_grad_mask`,
      [xs, ok],
      x.shape,
      x.dtype,
      "select(0.0, 1.0, select(v0 == v1 && !mg_isnan(v0), mg_isnan(v0), mg_isnan(v1)))",
    );
    const count = sum(maskF, ax, true);
    const gk = reshape(g, keptShape(x, ax));
    const share = div(gk, count);
    const grad = mul(maskF, share);
    for (const t of [ok, maskF, count, gk, share]) t.dispose();
    return [grad];
  }, [x, out]);
}

/**
 * Maximum over `axes` (all when omitted); NaN wins (as in PyTorch). The gradient is shared
 * among tied maxima (among the NaN positions when the maximum is NaN).
 *
 * @example Maximum over an axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 7, 3], [4, 5, 6]]);
 * console.log(await mg.max(x, -1).toArray()); // [7, 6]
 * console.log(await mg.max(mg.tensor([1, NaN, 3])).item()); // NaN
 * ```
 */
export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return extremum("max", x, axes, keepDims);
}

/**
 * Minimum over `axes` (all when omitted); NaN wins (as in PyTorch). The gradient is shared
 * among tied minima (among the NaN positions when the minimum is NaN).
 *
 * @example Minimum of everything
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.min(mg.tensor([[1, 7], [-4, 5]])).item()); // -4
 * ```
 */
export function min(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return extremum("min", x, axes, keepDims);
}

/**
 * Index (i32) of the first maximum along `axis`, or over the flattened tensor when omitted;
 * NaN counts as the maximum (the first NaN's index, as in PyTorch).
 *
 * @example Greedy decoding: the most likely token per position
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const logits = mg.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 3.0]]);
 * console.log(await mg.argmax(logits, -1).toArray()); // [1, 0] (ties: the first)
 * ```
 */
export function argmax(x: Tensor, axis?: number, keepDims = false): Tensor {
  return argExtremum("argmax", x, axis, keepDims);
}

/**
 * Index (i32) of the first minimum along `axis`, or over the flattened tensor when omitted;
 * NaN counts as the minimum (the first NaN's index, as in PyTorch).
 *
 * @example Index of the smallest entry
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.argmin(mg.tensor([3, -1, 2])).item()); // 1
 * ```
 */
export function argmin(x: Tensor, axis?: number, keepDims = false): Tensor {
  return argExtremum("argmin", x, axis, keepDims);
}

function argExtremum(
  op: "argmax" | "argmin",
  x: Tensor,
  axis: number | undefined,
  keepDims: boolean,
): Tensor {
  checkInput(op, x, true);
  if (axis === undefined) {
    const flat = reshape(x, [x.size]);
    const r = reduce(op, op, flat, [0], false);
    flat.dispose();
    if (!keepDims) return r;
    const k = reshape(r, x.shape.map(() => 1));
    r.dispose();
    return k;
  }
  return reduce(op, op, x, x.rank === 0 ? [] : [normalizeAxis(op, axis, x.rank)], keepDims);
}

export type { VarOptions };

/**
 * Variance over `axes` (all when omitted): Σ(x − mean)² / (count − correction).
 *
 * @example Unbiased variance per row
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2, 3, 4], [2, 2, 2, 2]]);
 * console.log(await mg.variance(x, 1).toArray()); // [1.666…, 0]
 * console.log(await x.var(1, { keepDims: true }).toArray()); // [[1.666…], [0]]
 * ```
 */
export function variance(
  x: Tensor,
  axes?: number | readonly number[],
  options: VarOptions = {},
): Tensor {
  checkInput("var", x, false);
  const ax = axesOf("var", axes, x.rank);
  const correction = options.correction ?? 1;
  if (typeof correction !== "number" || !Number.isFinite(correction)) {
    throw new MoongradError("var", `options.correction must be a finite number, got ${correction}`);
  }
  const count = ax.reduce((n, a) => n * x.shape[a], 1);
  const m = mean(x, ax, true);
  const d = sub(x, m);
  const d2 = square(d);
  const s = sum(d2, ax, options.keepDims ?? false);
  const out = div(s, Math.max(count - correction, 0));
  for (const t of [m, d, d2, s]) t.dispose();
  return out;
}

/**
 * Sums a broadcast result back to `shape` (the reverse of broadcasting); returns `g` itself when shapes match.
 *
 * @example Reduce a broadcast gradient back to a bias's shape
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const g = mg.ones([4, 3]); // d(loss)/d(x + bias) for bias [3]
 * console.log(await mg.sumTo(g, [3]).toArray()); // [4, 4, 4]
 * ```
 */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  const lead = g.rank - shape.length;
  if (lead < 0) {
    throw new MoongradError(
      "sumTo",
      `cannot reduce ${fmtShape(g.shape)} to the higher rank ${fmtShape(shape)}`,
    );
  }
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
    else if (shape[i - lead] !== g.shape[i]) {
      throw new MoongradError(
        "sumTo",
        `${fmtShape(g.shape)} is not a broadcast of ${fmtShape(shape)}`,
      );
    }
  }
  if (axes.length === 0) return lead === 0 ? g : reshape(g, shape);
  const s = sum(g, axes, true);
  const out = reshape(s, shape);
  s.dispose();
  return out;
}
