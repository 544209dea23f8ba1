/** Float64 references of cross-entropy (PyTorch semantics) and MSE, with their vjps. */
import { NDArray } from "./ndarray.ts";
import { logSumExp } from "./softmax.ts";

/** Reduction of a loss. */
export type Reduction = "mean" | "sum" | "none";

/** Options of the cross-entropy reference. */
export interface CeRefOptions {
  /** Ignored target value (default −100). */
  ignoreIndex?: number;
  /** Reduction (default "mean"). */
  reduction?: Reduction;
}

function rowsOf(logits: NDArray): { rows: number; c: number } {
  const c = logits.shape[logits.rank - 1];
  return { rows: logits.size / c, c };
}

/**
 * Cross-entropy of logits [..., C] against integer targets (flat, one per row): per-row
 * lse − x[t], 0 for ignored rows, NaN for targets outside [0, C); mean over non-ignored rows
 * (NaN when there are none).
 */
export function crossEntropyRef(
  logits: NDArray,
  targets: readonly number[],
  options: CeRefOptions = {},
): NDArray {
  const ignore = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? "mean";
  const { rows, c } = rowsOf(logits);
  const loss = new Float64Array(rows);
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const t = targets[r];
    if (t === ignore) continue;
    count++;
    const row = Array.from(logits.data.subarray(r * c, (r + 1) * c));
    loss[r] = t >= 0 && t < c ? logSumExp(row) - row[t] : NaN;
  }
  if (reduction === "none") return new NDArray(loss, logits.shape.slice(0, -1));
  const total = loss.reduce((a, b) => a + b, 0);
  return new NDArray(Float64Array.of(reduction === "sum" ? total : total / count), []);
}

/** vjp of cross-entropy w.r.t. logits; `g` is a scalar ("mean"/"sum") or one value per row. */
export function crossEntropyVjp(
  logits: NDArray,
  targets: readonly number[],
  options: CeRefOptions,
  g: NDArray,
): NDArray {
  const ignore = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? "mean";
  const { rows, c } = rowsOf(logits);
  const count = targets.filter((t) => t !== ignore).length;
  const out = new Float64Array(logits.size);
  for (let r = 0; r < rows; r++) {
    const t = targets[r];
    if (t === ignore) continue;
    const row = Array.from(logits.data.subarray(r * c, (r + 1) * c));
    const lse = logSumExp(row);
    const gr = reduction === "none"
      ? g.data[r]
      : reduction === "sum"
      ? g.data[0]
      : g.data[0] / count;
    for (let j = 0; j < c; j++) {
      out[r * c + j] = t >= 0 && t < c ? (Math.exp(row[j] - lse) - (j === t ? 1 : 0)) * gr : NaN;
    }
  }
  return new NDArray(out, logits.shape);
}

/** Mean squared error. */
export function mseRef(pred: NDArray, target: NDArray, reduction: Reduction = "mean"): NDArray {
  const sq = pred.data.map((p, i) => (p - target.data[i]) ** 2);
  if (reduction === "none") return new NDArray(sq, pred.shape);
  const total = sq.reduce((a, b) => a + b, 0);
  return new NDArray(Float64Array.of(reduction === "sum" ? total : total / sq.length), []);
}

/** vjp of MSE w.r.t. pred (the gradient w.r.t. target is its negation). */
export function mseVjp(
  pred: NDArray,
  target: NDArray,
  reduction: Reduction,
  g: NDArray,
): NDArray {
  const scale = reduction === "mean" ? 1 / pred.size : 1;
  return new NDArray(
    pred.data.map((p, i) =>
      2 * (p - target.data[i]) * scale * (reduction === "none" ? g.data[i] : g.data[0])
    ),
    pred.shape,
  );
}
