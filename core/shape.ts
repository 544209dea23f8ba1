import { fmtShape, MoongradError } from "./errors.ts";

/**
 * A tensor shape: one non-negative integer per axis.
 *
 * @example Shapes are plain arrays of axis sizes
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const shape: mg.Shape = [2, 3];
 * console.log(mg.zeros(shape).reshape([3, 2]).shape); // [3, 2]
 * ```
 */
export type Shape = readonly number[];

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major (C-order) strides of a shape, in elements. */
export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Throws unless `shape` is an array of non-negative integers. */
export function checkShape(op: string, shape: unknown, arg = "shape"): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new MoongradError(
      op,
      `${arg} must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  return [...shape];
}

/** NumPy broadcasting of two shapes; throws naming the op and both shapes when incompatible. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new MoongradError(
        op,
        `shapes ${fmtShape(a)} and ${fmtShape(b)} do not broadcast (axis ${i}: ${da} vs ${db})`,
      );
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Resolves a possibly negative axis against `rank`; throws when out of range. */
export function normalizeAxis(op: string, axis: number, rank: number, arg = "axis"): number {
  // A rank-0 tensor takes axis 0 or -1, as in PyTorch (dims wrap as if the rank were 1).
  const r = Math.max(rank, 1);
  if (!Number.isInteger(axis) || axis < -r || axis >= r) {
    throw new MoongradError(
      op,
      `${arg} ${axis} is out of range for a tensor of rank ${rank} (expected ${-r}..${r - 1})`,
    );
  }
  return axis < 0 ? axis + r : axis;
}

/** Resolves an axis list (undefined = all axes), rejecting duplicates. Returns sorted axes. */
export function normalizeAxes(
  op: string,
  axes: number | readonly number[] | undefined,
  rank: number,
): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === "number" ? [axes] : [...axes];
  const out = list.map((a) => normalizeAxis(op, a, rank));
  if (new Set(out).size !== out.length) {
    throw new MoongradError(op, `axes ${JSON.stringify(list)} repeat an axis`);
  }
  return out.sort((x, y) => x - y);
}

/** True when two shapes are equal. */
export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
