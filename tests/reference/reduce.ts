/**
 * Float64 references for reductions and their vjps. Axes are normalised (non-negative,
 * sorted); `keepDims` follows the library. Extremum gradients are shared equally among ties.
 * NaN follows PyTorch: it propagates through every reduction and wins max/min/argmax/argmin.
 */
import { broadcastTo, NDArray, reduceAxes, zip } from "./ndarray.ts";

const total = (v: number[]) => v.reduce((a, b) => a + b, 0);

/** Sum over `axes`. */
export function sumRef(x: NDArray, axes: readonly number[], keepDims: boolean): NDArray {
  return reduceAxes(x, axes, keepDims, total);
}

/** Mean over `axes`. */
export function meanRef(x: NDArray, axes: readonly number[], keepDims: boolean): NDArray {
  return reduceAxes(x, axes, keepDims, (v) => total(v) / v.length);
}

/** Maximum over `axes`. */
export function maxRef(x: NDArray, axes: readonly number[], keepDims: boolean): NDArray {
  return reduceAxes(x, axes, keepDims, (v) => Math.max(...v));
}

/** Minimum over `axes`. */
export function minRef(x: NDArray, axes: readonly number[], keepDims: boolean): NDArray {
  return reduceAxes(x, axes, keepDims, (v) => Math.min(...v));
}

/**
 * Index of the first maximum (or minimum) along `axes` (in row-major order of those axes);
 * NaN wins: the index of the first NaN (PyTorch).
 */
export function argRef(
  x: NDArray,
  axes: readonly number[],
  keepDims: boolean,
  which: "max" | "min",
): NDArray {
  return reduceAxes(x, axes, keepDims, (v) => {
    const nan = v.findIndex(Number.isNaN);
    if (nan >= 0) return nan;
    let best = 0;
    for (let i = 1; i < v.length; i++) {
      if (which === "max" ? v[i] > v[best] : v[i] < v[best]) best = i;
    }
    return best;
  });
}

/** Σ(x − mean)² / (count − correction) over `axes`. */
export function varRef(
  x: NDArray,
  axes: readonly number[],
  keepDims: boolean,
  correction: number,
): NDArray {
  return reduceAxes(x, axes, keepDims, (v) => {
    const m = total(v) / v.length;
    return total(v.map((a) => (a - m) ** 2)) / (v.length - correction);
  });
}

/** `g` (reduced shape) broadcast back over the reduced axes of `shape`. */
export function spread(g: NDArray, shape: readonly number[], axes: readonly number[]): NDArray {
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return broadcastTo(new NDArray(g.data, kept), shape);
}

/** vjp of sum: the upstream copied to every reduced position. */
export function sumVjp(x: NDArray, axes: readonly number[], g: NDArray): NDArray {
  return spread(g, x.shape, axes);
}

/** vjp of mean: the upstream divided by the count. */
export function meanVjp(x: NDArray, axes: readonly number[], g: NDArray): NDArray {
  const count = axes.reduce((n, a) => n * x.shape[a], 1);
  return zip([spread(g, x.shape, axes)], (v) => v / count);
}

/**
 * vjp of max/min: the upstream shared equally among the positions equal to the extremum (the
 * NaN positions when it is NaN, as torch.max() does).
 */
export function extremumVjp(
  x: NDArray,
  axes: readonly number[],
  g: NDArray,
  which: "max" | "min",
): NDArray {
  const ext = spread((which === "max" ? maxRef : minRef)(x, axes, true), x.shape, axes);
  const hit = zip([x, ext], (a, e) => (a === e || (Number.isNaN(a) && Number.isNaN(e)) ? 1 : 0));
  const count = spread(sumRef(hit, axes, true), x.shape, axes);
  return zip([spread(g, x.shape, axes), hit, count], (gi, h, c) => (gi * h) / c);
}

/** vjp of variance: g · 2(x − mean) / (count − correction). */
export function varVjp(
  x: NDArray,
  axes: readonly number[],
  g: NDArray,
  correction: number,
): NDArray {
  const count = axes.reduce((n, a) => n * x.shape[a], 1);
  const m = spread(meanRef(x, axes, true), x.shape, axes);
  return zip(
    [spread(g, x.shape, axes), x, m],
    (gi, xi, mi) => (gi * 2 * (xi - mi)) / (count - correction),
  );
}
