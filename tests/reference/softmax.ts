/** Float64 references of softmax, log-softmax and their vjps along any axis. */
import { NDArray } from "./ndarray.ts";

/**
 * Calls `f(indices)` once per row along `axis`, where `indices` are the flat positions of the
 * row's elements in row-major order. A rank-0 array is one row of one element.
 */
export function forEachRow(
  shape: readonly number[],
  axis: number,
  f: (indices: number[]) => void,
): void {
  if (shape.length === 0) {
    f([0]);
    return;
  }
  const ax = axis < 0 ? axis + shape.length : axis;
  const n = shape[ax];
  const inner = shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, ax).reduce((a, b) => a * b, 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const idx: number[] = [];
      for (let j = 0; j < n; j++) idx.push((o * n + j) * inner + i);
      f(idx);
    }
  }
}

/**
 * log Σ exp(v), computed stably as m + log Σ exp(v − m) with m = max v: PyTorch's softmax and
 * log_softmax, so a row holding NaN or +Inf (+Inf − +Inf) or only −Inf gives NaN.
 */
export function logSumExp(values: readonly number[]): number {
  const m = Math.max(...values);
  let s = 0;
  for (const v of values) s += Math.exp(v - m);
  return m + Math.log(s);
}

/** Softmax along `axis`. */
export function softmaxRef(x: NDArray, axis: number): NDArray {
  const out = new Float64Array(x.size);
  forEachRow(x.shape, axis, (idx) => {
    const lse = logSumExp(idx.map((i) => x.data[i]));
    for (const i of idx) out[i] = Math.exp(x.data[i] - lse);
  });
  return new NDArray(out, x.shape);
}

/** Log-softmax along `axis`. */
export function logSoftmaxRef(x: NDArray, axis: number): NDArray {
  const out = new Float64Array(x.size);
  forEachRow(x.shape, axis, (idx) => {
    const lse = logSumExp(idx.map((i) => x.data[i]));
    for (const i of idx) out[i] = x.data[i] - lse;
  });
  return new NDArray(out, x.shape);
}

/** vjp of softmax: dx = y ⊙ (g − Σ g⊙y) per row. */
export function softmaxVjp(x: NDArray, axis: number, g: NDArray): NDArray {
  const y = softmaxRef(x, axis);
  const out = new Float64Array(x.size);
  forEachRow(x.shape, axis, (idx) => {
    let dot = 0;
    for (const i of idx) dot += g.data[i] * y.data[i];
    for (const i of idx) out[i] = y.data[i] * (g.data[i] - dot);
  });
  return new NDArray(out, x.shape);
}

/** vjp of log-softmax: dx = g − softmax(x) ⊙ Σ g per row. */
export function logSoftmaxVjp(x: NDArray, axis: number, g: NDArray): NDArray {
  const y = softmaxRef(x, axis);
  const out = new Float64Array(x.size);
  forEachRow(x.shape, axis, (idx) => {
    let sum = 0;
    for (const i of idx) sum += g.data[i];
    for (const i of idx) out[i] = g.data[i] - y.data[i] * sum;
  });
  return new NDArray(out, x.shape);
}
