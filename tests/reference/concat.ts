/** Float64 references for concat, stack and split, with their vjps. */
import { NDArray, ravel, size, unravel } from "./ndarray.ts";

/** Joins arrays along `axis` (all other axes equal). */
export function concatRef(xs: readonly NDArray[], axis: number): NDArray {
  const shape = [...xs[0].shape];
  shape[axis] = xs.reduce((n, x) => n + x.shape[axis], 0);
  const out = new Float64Array(size(shape));
  let start = 0;
  for (const x of xs) {
    for (let i = 0; i < x.size; i++) {
      const c = unravel(i, x.shape);
      c[axis] += start;
      out[ravel(c, shape)] = x.data[i];
    }
    start += x.shape[axis];
  }
  return new NDArray(out, shape);
}

/** Elements `start..end` of `axis`. */
export function sliceRef(a: NDArray, axis: number, start: number, end: number): NDArray {
  const shape = [...a.shape];
  shape[axis] = end - start;
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) {
    const c = unravel(i, shape);
    c[axis] += start;
    out[i] = a.data[ravel(c, a.shape)];
  }
  return new NDArray(out, shape);
}

/** Inserts a size-1 axis. */
export function unsqueezeRef(a: NDArray, axis: number): NDArray {
  const shape = [...a.shape];
  shape.splice(axis, 0, 1);
  return new NDArray(a.data, shape);
}

/** Joins equal-shape arrays along a new axis. */
export function stackRef(xs: readonly NDArray[], axis: number): NDArray {
  return concatRef(xs.map((x) => unsqueezeRef(x, axis)), axis);
}

/** torch.split semantics: a number is a piece size (last piece smaller), an array the sizes. */
export function splitSizes(n: number, sizesOrSize: number | readonly number[]): number[] {
  if (typeof sizesOrSize !== "number") return [...sizesOrSize];
  const out: number[] = [];
  for (let s = 0; s < n; s += sizesOrSize) out.push(Math.min(sizesOrSize, n - s));
  if (n === 0) out.push(0);
  return out;
}

/** Splits `a` along `axis`. */
export function splitRef(
  a: NDArray,
  sizesOrSize: number | readonly number[],
  axis: number,
): NDArray[] {
  let start = 0;
  return splitSizes(a.shape[axis], sizesOrSize).map((s) => {
    const piece = sliceRef(a, axis, start, start + s);
    start += s;
    return piece;
  });
}

/** vjp of concat: the slice of `g` belonging to each input. */
export function concatVjp(g: NDArray, lengths: readonly number[], axis: number): NDArray[] {
  let start = 0;
  return lengths.map((n) => {
    const piece = sliceRef(g, axis, start, start + n);
    start += n;
    return piece;
  });
}

/** vjp of split: the pieces' gradients joined back together. */
export function splitVjp(gs: readonly NDArray[], axis: number): NDArray {
  return concatRef(gs, axis);
}
