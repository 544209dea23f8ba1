/**
 * Losses: cross-entropy (fused log-softmax + NLL, PyTorch semantics for `ignoreIndex` and the
 * reductions) and mean squared error.
 *
 * crossEntropy runs one row kernel (max, logsumexp, loss = lse − x[target]) that also writes
 * each row's weight (1, or 0 when ignored), max and log-sum, then for "mean"/"sum" one
 * single-workgroup kernel that sums losses and weights and divides on the GPU (no readback).
 * The backward is one elementwise kernel (a thread per logit):
 * dlogits = (exp(x − max − logsum) − onehot(target)) · g_row, scaled by 1/count for "mean",
 * zero for ignored rows; the saved max and log-sum spare it a second pass over the row.
 */
import { noGrad, record } from "../core/autograd.ts";
import { isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { contiguousStrides, numel, sameShape } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { columnsPerThread, grid1d, linearId } from "./grid.ts";
import { checkIndexRange } from "./check_indices.ts";
import { mean, sum } from "./reduce.ts";
import { pointwise } from "./pointwise.ts";
import {
  perRowOperand,
  rowBlock,
  rowGrid,
  rowLanes,
  rowMaxSum,
  rowOperand,
  rowParams,
  rowPrelude,
  rowSetup,
  rowWorkgroup,
} from "./softmax.ts";

/**
 * Options of `crossEntropy`.
 *
 * @example Ignore padding, keep one loss per row
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const logits = mg.zeros([3, 4]); // uniform over 4 classes
 * const targets = mg.tensor([1, -100, 3], { dtype: "i32" });
 * const opts: mg.CrossEntropyOptions = { reduction: "none" };
 * console.log(await mg.crossEntropy(logits, targets, opts).toArray()); // [1.386…, 0, 1.386…]
 * ```
 */
export interface CrossEntropyOptions {
  /** Rows whose target equals this contribute 0 and leave the mean's denominator (default −100). */
  ignoreIndex?: number;
  /** "mean" over non-ignored rows (default), "sum", or "none" (one loss per row). */
  reduction?: "mean" | "sum" | "none";
}

const REDUCE_WG = 256;
const EW_WG = 256;
const MODE = { none: 0, sum: 1, mean: 2 } as const;

/** Cross-entropy rows (logits, targets): the ignored target and the NaN of a bad target. */
const CE_ROWS = rowBlock("cross_entropy", 2, { ignoreIndex: "i32", nan: "f32" });
/** The one-workgroup sum of the row losses and weights. */
const CE_REDUCE = params("cross_entropy_reduce", { rows: "u32", mode: "u32", nan: "f32" });
/** Cross-entropy backward (logits, targets, g, dx): the reduction mode as well. */
const CE_GRAD = rowBlock("cross_entropy_grad", 4, { ignoreIndex: "i32", mode: "u32", nan: "f32" });

function checkReduction(op: string, reduction: unknown): "mean" | "sum" | "none" {
  if (reduction === "mean" || reduction === "sum" || reduction === "none") return reduction;
  throw new MoongradError(
    op,
    `reduction ${JSON.stringify(reduction)} is not one of "mean", "sum", "none"`,
  );
}

function checkTensor(op: string, t: unknown, arg: string): Tensor {
  if (!(t instanceof Tensor)) {
    throw new MoongradError(op, `${arg} must be a Tensor, got ${typeof t}`);
  }
  t.storage(op);
  return t;
}

/**
 * Cross-entropy of `logits` [..., C] (f32 or f16; classes on the last axis) against i32
 * class indices `targets` [...] (the leading axes of logits), as in PyTorch:
 * loss_i = logsumexp(logits_i) − logits_i[target_i], stable for any finite logits.
 *
 * - Rows whose target equals `ignoreIndex` (default −100) give loss 0 and are left out of the
 *   mean's denominator; when every row is ignored (or there are no rows) "mean" is NaN, as in
 *   PyTorch.
 * - A target outside [0, C) other than `ignoreIndex` is an error: the targets are range-checked
 *   on the GPU (ops/check_indices.ts) and the next readback throws a MoongradError naming the
 *   value and its position. With `setCheckIndices(false)` that row's loss and its gradient
 *   row are NaN (so "mean" and "sum" are NaN too).
 * - A row of logits holding NaN or +Inf (or all −Inf) gives NaN loss and gradient, as in
 *   PyTorch; a target logit of −Inf gives +Inf.
 * - The result has logits' dtype (computed in f32): a scalar for "mean"/"sum", shape
 *   `targets.shape` for "none".
 *
 * @example Next-token loss over [B, T, vocab] logits
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const logits = mg.randn([2, 5, 16], { seed: 0, requiresGrad: true });
 * const targets = mg.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, -100]], { dtype: "i32" });
 * const loss = mg.crossEntropy(logits, targets); // mean over the 9 rows not ignored
 * loss.backward();
 * console.log(loss.shape, logits.grad!.shape); // [] [2, 5, 16]
 * ```
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  options: CrossEntropyOptions = {},
): Tensor {
  const op = "crossEntropy";
  checkTensor(op, logits, "logits");
  checkTensor(op, targets, "targets");
  const reduction = checkReduction(op, options.reduction ?? "mean");
  const ignoreIndex = options.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex) || Math.abs(ignoreIndex) > 2 ** 31 - 1) {
    throw new MoongradError(op, `ignoreIndex must be a 32-bit integer, got ${ignoreIndex}`);
  }
  if (!isFloat(logits.dtype)) {
    throw new MoongradError(
      op,
      `logits has dtype ${logits.dtype}; expected f32 or f16 (shape ${fmtShape(logits.shape)})`,
    );
  }
  if (logits.rank === 0 || logits.shape[logits.rank - 1] === 0) {
    throw new MoongradError(
      op,
      `logits must have a non-empty class axis last, shape [..., C] with C ≥ 1; got ${
        fmtShape(logits.shape)
      }`,
    );
  }
  if (targets.dtype !== "i32") {
    throw new MoongradError(
      op,
      `targets has dtype ${targets.dtype}; expected i32 class indices (shape ${
        fmtShape(targets.shape)
      })`,
    );
  }
  const outer = logits.shape.slice(0, -1);
  if (!sameShape(outer, targets.shape)) {
    throw new MoongradError(
      op,
      `targets shape ${fmtShape(targets.shape)} must equal the leading axes ${
        fmtShape(outer)
      } of logits ${fmtShape(logits.shape)}`,
    );
  }
  const axis = logits.rank - 1;
  const n = logits.shape[axis];
  const rows = numel(outer);
  checkIndexRange(op, "targets", targets, 0, n, ignoreIndex);
  // rowsBuf (f32): [0, R) loss, [R, 2R) weight, [2R, 3R) row max, [3R, 4R) log Σ exp(x − max).
  // Keeping max and log-sum apart (not lse = their sum) keeps exp(x − max − logsum) exact to
  // f32 for logits of 1e4, whose lse would carry an absolute rounding of ~1e-3.
  const rowsBuf = Tensor.empty([4 * rows], "f32");
  if (rows > 0) {
    const xo = rowOperand(logits, axis);
    const lanes = rowLanes(n, rows, xo.axis);
    const k = kernel({
      name: `cross_entropy_l${lanes}`,
      bindings: [
        { name: "x", type: wgslType(logits.dtype), access: "read" },
        { name: "tgt", type: "i32", access: "read" },
        { name: "rowsOut", type: "f32", access: "read_write" },
      ],
      workgroupSize: [rowWorkgroup(lanes)],
      params: CE_ROWS.block,
      prelude: rowPrelude(CE_ROWS, lanes),
      body: `${rowSetup(lanes)}${rowMaxSum("x")}
  if (lane == 0u && valid) {
    let ls = mg_log(ms.y);
    let t = tgt[row_off(row, 1u)];
    let r = p_rows();
    var loss = 0.0;
    var w = 0.0;
    if (t != p_ignoreIndex()) {
      w = 1.0;
      if (t >= 0 && u32(t) < n) { loss = (ms.x - f32(x[xb + u32(t) * xs])) + ls; } else { loss = p_nan(); }
    }
    rowsOut[row] = loss;
    rowsOut[r + row] = w;
    rowsOut[2u * r + row] = ms.x;
    rowsOut[3u * r + row] = ls;
  }`,
    });
    const words = rowParams(CE_ROWS, op, outer, n, [xo, perRowOperand(targets, outer.length)], {
      ignoreIndex,
      nan: NaN,
    });
    dispatch(
      k,
      [logits.storage(op).buf, targets.storage(op).buf, rowsBuf.storage(op).buf],
      words,
      rowGrid(rows, lanes),
    );
  }
  // stats (f32 [2]): the reduced loss and the number of non-ignored rows.
  let stats: Tensor | null = null;
  let out: Tensor;
  if (reduction === "none") {
    out = rowsBuf.view(outer, contiguousStrides(outer), 0);
  } else {
    stats = reduceRows(rowsBuf, rows, reduction);
    out = stats.view([], [], 0);
  }
  if (logits.dtype !== "f32") {
    const cast = pointwise("cross_entropy_cast", [out], out.shape, logits.dtype, "v0");
    out.dispose();
    out = cast;
  }
  const saved = [logits, targets, rowsBuf, ...(stats ? [stats] : [])];
  record(out, op, [logits, targets], (g, needs, [x, t, r, st]) => {
    if (!needs[0]) return [null, null];
    return [crossEntropyBackward(g, x, t, r, st ?? r, reduction, ignoreIndex), null];
  }, saved);
  rowsBuf.dispose();
  stats?.dispose();
  return out;
}

/** Sums the per-row losses and weights of `rowsBuf` in one workgroup: [value, count]. */
function reduceRows(rowsBuf: Tensor, rows: number, reduction: "sum" | "mean"): Tensor {
  const stats = Tensor.empty([2], "f32");
  const k = kernel({
    name: "cross_entropy_reduce",
    bindings: [
      { name: "rowsIn", type: "f32", access: "read" },
      { name: "st", type: "f32", access: "read_write" },
    ],
    workgroupSize: [REDUCE_WG],
    params: CE_REDUCE,
    prelude: `var<workgroup> sa: array<f32, ${REDUCE_WG}>;
var<workgroup> sb: array<f32, ${REDUCE_WG}>;`,
    body: `
  let r = p_rows();
  var s = 0.0;
  var c = 0.0;
  for (var i = lidx; i < r; i += ${REDUCE_WG}u) {
    s += rowsIn[i];
    c += rowsIn[r + i];
  }
  sa[lidx] = s;
  sb[lidx] = c;
  workgroupBarrier();
  for (var h = ${REDUCE_WG / 2}u; h > 0u; h >>= 1u) {
    if (lidx < h) {
      sa[lidx] = sa[lidx] + sa[lidx + h];
      sb[lidx] = sb[lidx] + sb[lidx + h];
    }
    workgroupBarrier();
  }
  if (lidx == 0u) {
    let total = sa[0];
    let count = sb[0];
    var v = total;
    if (p_mode() == ${MODE.mean}u) { v = select(total / count, p_nan(), count == 0.0); }
    st[0] = v;
    st[1] = count;
  }`,
  });
  const words = CE_REDUCE.pack({ rows, mode: MODE[reduction], nan: NaN });
  dispatch(k, [rowsBuf.storage("crossEntropy").buf, stats.storage("crossEntropy").buf], words, [
    1,
  ]);
  return stats;
}

/** dlogits = (exp(x − max − logsum) − onehot(t)) · g_row (/ count for "mean"); 0 on ignored rows. */
function crossEntropyBackward(
  g: Tensor,
  logits: Tensor,
  targets: Tensor,
  rowsBuf: Tensor,
  stats: Tensor,
  reduction: "mean" | "sum" | "none",
  ignoreIndex: number,
): Tensor {
  const op = "crossEntropy_grad";
  const dx = Tensor.empty(logits.shape, logits.dtype);
  const total = dx.size;
  if (total === 0) return dx;
  const axis = logits.rank - 1;
  const n = logits.shape[axis];
  const outer = logits.shape.slice(0, -1);
  const t = wgslType(logits.dtype);
  // G classes of one row per thread: the row's offsets (a loop over the outer axes with its
  // parameter reads, the main cost per element on a CPU adapter) are found once per G.
  const G = columnsPerThread(n);
  const k = kernel({
    name: "cross_entropy_grad",
    bindings: [
      { name: "x", type: t, access: "read" },
      { name: "tgt", type: "i32", access: "read" },
      { name: "rowsIn", type: "f32", access: "read" },
      { name: "st", type: "f32", access: "read" },
      { name: "g", type: wgslType(g.dtype), access: "read" },
      { name: "dx", type: t, access: "read_write" },
    ],
    workgroupSize: [EW_WG],
    params: CE_GRAD.block,
    prelude: rowPrelude(CE_GRAD, 1),
    body: `
  let i = ${linearId(EW_WG)};
  let n = p_n();
  let r = p_rows();
  let per = n / ${G}u;
  if (i >= r * per) { return; }
  let row = i / per;
  let j0 = (i % per) * ${G}u;
  let tg = tgt[row_off(row, 1u)];
  let xo = row_off(row, 0u);
  let dxo = row_off(row, 3u);
  for (var q = 0u; q < ${G}u; q++) {
    let j = j0 + q;
    var d = 0.0;
    if (tg != p_ignoreIndex()) {
      let xv = f32(x[xo + j * ax_stride(0u)]);
      let p = mg_exp((xv - rowsIn[2u * r + row]) - rowsIn[3u * r + row]);
      var gr = f32(g[row_off(row, 2u)]);
      if (p_mode() == ${MODE.mean}u) { gr = gr / st[1]; }
      if (tg >= 0 && u32(tg) < n) {
        d = (p - select(0.0, 1.0, u32(tg) == j)) * gr;
      } else {
        d = p_nan();
      }
    }
    dx[dxo + j * ax_stride(3u)] = ${t}(d);
  }`,
  });
  const go = reduction === "none" ? perRowOperand(g, outer.length) : {
    outer: new Array<number>(outer.length).fill(0),
    axis: 0,
    offset: g.offset,
  };
  const words = rowParams(CE_GRAD, op, outer, n, [
    rowOperand(logits, axis),
    perRowOperand(targets, outer.length),
    go,
    rowOperand(dx, axis),
  ], { ignoreIndex, mode: MODE[reduction], nan: NaN });
  dispatch(
    k,
    [
      logits.storage(op).buf,
      targets.storage(op).buf,
      rowsBuf.storage(op).buf,
      stats.storage(op).buf,
      g.storage(op).buf,
      dx.storage(op).buf,
    ],
    words,
    grid1d(total / G, EW_WG),
  );
  return dx;
}

/**
 * Mean squared error between `pred` and `target` (same shape, same float dtype): mean
 * (default), sum, or the elementwise squares ("none"). One pointwise pass (plus the
 * reduction); the backward is one pointwise pass per argument: ±2·g·(pred − target)/count.
 *
 * @example Mean squared error
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const pred = mg.tensor([1, 2, 3]);
 * console.log(await mg.mseLoss(pred, mg.tensor([1, 0, 3])).item()); // 1.333…
 * console.log(await mg.mseLoss(pred, mg.zeros([3]), { reduction: "sum" }).item()); // 14
 * ```
 */
export function mseLoss(
  pred: Tensor,
  target: Tensor,
  options: { reduction?: "mean" | "sum" | "none" } = {},
): Tensor {
  const op = "mseLoss";
  checkTensor(op, pred, "pred");
  checkTensor(op, target, "target");
  const reduction = checkReduction(op, options.reduction ?? "mean");
  if (!isFloat(pred.dtype) || pred.dtype !== target.dtype) {
    throw new MoongradError(
      op,
      `pred (${pred.dtype}) and target (${target.dtype}) must share one float dtype (f32 or f16)`,
    );
  }
  if (!sameShape(pred.shape, target.shape)) {
    throw new MoongradError(
      op,
      `pred ${fmtShape(pred.shape)} and target ${fmtShape(target.shape)} must have the same shape`,
    );
  }
  const sq = pointwise("mse_sq", [pred, target], pred.shape, pred.dtype, "(v0 - v1) * (v0 - v1)");
  let out = sq;
  if (reduction !== "none") {
    out = noGrad(() => (reduction === "mean" ? mean(sq) : sum(sq)));
    sq.dispose();
  }
  const scale = reduction === "mean" ? 2 / Math.max(pred.size, 1) : 2;
  // The vjp reads the retained saved handles, so disposing pred/target early is safe.
  record(out, op, [pred, target], (g, needs, [p, t]) => {
    const s = { scalar: scale, dtype: p.dtype };
    return [
      needs[0]
        ? pointwise("mse_grad", [g, p, t, s], p.shape, p.dtype, "v3 * v0 * (v1 - v2)")
        : null,
      needs[1]
        ? pointwise("mse_grad", [g, t, p, s], p.shape, p.dtype, "v3 * v0 * (v1 - v2)")
        : null,
    ];
  }, [pred, target]);
  return out;
}
