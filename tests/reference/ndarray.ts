/**
 * Float64 CPU reference arrays: the oracle every GPU op is tested against. Plain loops over
 * row-major data, written for obviousness rather than speed.
 */

/** A row-major float64 array with a shape. */
export class NDArray {
  /** Creates an array; `data.length` must equal the product of `shape`. */
  constructor(readonly data: Float64Array, readonly shape: readonly number[]) {
    if (data.length !== size(shape)) {
      throw new Error(`NDArray: ${data.length} values for shape [${shape}]`);
    }
  }
  /** Element count. */
  get size(): number {
    return this.data.length;
  }
  /** Number of axes. */
  get rank(): number {
    return this.shape.length;
  }
  /** Element at the given coordinates. */
  at(...coords: number[]): number {
    return this.data[ravel(coords, this.shape)];
  }
}

/** An NDArray from flat values. */
export function nd(values: ArrayLike<number>, shape: readonly number[]): NDArray {
  return new NDArray(Float64Array.from(values), shape);
}

/** Product of a shape. */
export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Row-major strides. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Coordinates of flat index `i`. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const c = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}

/** Flat index of coordinates. */
export function ravel(coords: readonly number[], shape: readonly number[]): number {
  let i = 0;
  for (let d = 0; d < shape.length; d++) i = i * shape[d] + coords[d];
  return i;
}

/** NumPy broadcast of shapes (throws when incompatible). */
export function broadcastShape(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const v = s[s.length - rank + i] ?? 1;
      if (v !== 1 && d !== 1 && v !== d) throw new Error(`shapes do not broadcast`);
      if (v !== 1) d = v;
    }
    out.push(d);
  }
  return out;
}

/** Materialises `a` broadcast to `shape`. */
export function broadcastTo(a: NDArray, shape: readonly number[]): NDArray {
  const out = new Float64Array(size(shape));
  const lead = shape.length - a.rank;
  for (let i = 0; i < out.length; i++) {
    const c = unravel(i, shape).slice(lead).map((v, d) => (a.shape[d] === 1 ? 0 : v));
    out[i] = a.data[ravel(c, a.shape)];
  }
  return new NDArray(out, shape);
}

/** Elementwise map. */
export function map(a: NDArray, f: (x: number, i: number) => number): NDArray {
  return new NDArray(a.data.map(f), a.shape);
}

/** Elementwise function of several broadcast arrays. */
export function zip(arrays: NDArray[], f: (...xs: number[]) => number): NDArray {
  const shape = broadcastShape(...arrays.map((a) => a.shape));
  const bs = arrays.map((a) => broadcastTo(a, shape));
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) out[i] = f(...bs.map((b) => b.data[i]));
  return new NDArray(out, shape);
}

/** Reduces over `axes` with `f` applied to each group of values (in row-major order). */
export function reduceAxes(
  a: NDArray,
  axes: readonly number[],
  keepDims: boolean,
  f: (values: number[]) => number,
): NDArray {
  const groups = new Map<number, number[]>();
  const keptShape = a.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  for (let i = 0; i < a.size; i++) {
    const c = unravel(i, a.shape).map((v, d) => (axes.includes(d) ? 0 : v));
    const k = ravel(c, keptShape);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(a.data[i]);
  }
  const out = new Float64Array(size(keptShape));
  for (let k = 0; k < out.length; k++) out[k] = f(groups.get(k) ?? []);
  const shape = keepDims ? keptShape : a.shape.filter((_, i) => !axes.includes(i));
  return new NDArray(out, shape);
}

/** Sums a broadcast array back to `shape`. */
export function sumTo(a: NDArray, shape: readonly number[]): NDArray {
  const lead = a.rank - shape.length;
  const axes = a.shape.map((_d, i) => i).filter((i) =>
    i < lead || (shape[i - lead] === 1 && a.shape[i] !== 1)
  );
  const r = reduceAxes(a, axes, true, (v) => v.reduce((x, y) => x + y, 0));
  return new NDArray(r.data, shape);
}

/** Axis permutation. */
export function permute(a: NDArray, axes: readonly number[]): NDArray {
  const shape = axes.map((x) => a.shape[x]);
  const out = new Float64Array(a.size);
  for (let i = 0; i < out.length; i++) {
    const c = unravel(i, shape);
    const src = new Array<number>(a.rank);
    axes.forEach((ax, d) => (src[ax] = c[d]));
    out[i] = a.data[ravel(src, a.shape)];
  }
  return new NDArray(out, shape);
}

/**
 * Central finite-difference gradient of a scalar function of `x` in float64 (step h).
 * Used to check every reference vjp.
 */
export function numericGrad(f: (x: NDArray) => number, x: NDArray, h = 1e-6): NDArray {
  const g = new Float64Array(x.size);
  for (let i = 0; i < x.size; i++) {
    const plus = new Float64Array(x.data);
    const minus = new Float64Array(x.data);
    plus[i] += h;
    minus[i] -= h;
    g[i] = (f(new NDArray(plus, x.shape)) - f(new NDArray(minus, x.shape))) / (2 * h);
  }
  return new NDArray(g, x.shape);
}

/** Σ a·b over all elements (pairs a function output with an upstream gradient). */
export function dot(a: NDArray, b: NDArray): number {
  let s = 0;
  for (let i = 0; i < a.size; i++) s += a.data[i] * b.data[i];
  return s;
}
