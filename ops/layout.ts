/**
 * View ops: reshape, permute/transpose, slice, expand, squeeze/unsqueeze. They share storage
 * with their input (no copy) except reshape of a non-contiguous tensor, which copies once.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { contiguousStrides, normalizeAxis, numel } from "../core/shape.ts";
import type { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { contiguous } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";
import { fillInPlace, sliceGrad } from "./copy.ts";
import { usablePrior } from "./grad_prior.ts";

/** A new handle on the same data, cut from the graph (used for detach and gradient aliasing). */
export function alias(x: Tensor): Tensor {
  return x.view(x.shape, x.strides, x.offset);
}

/** Resolves a target shape with at most one −1 against `size`. */
export function resolveShape(
  op: string,
  shape: readonly number[],
  size: number,
  from: readonly number[],
): number[] {
  const out = [...shape];
  const unknown = out.indexOf(-1);
  if (out.some((d, i) => !Number.isInteger(d) || (d < 0 && !(d === -1 && i === unknown)))) {
    throw new MoongradError(
      op,
      `shape ${fmtShape(shape)} must hold non-negative integers and at most one -1`,
    );
  }
  if (unknown >= 0) {
    const rest = numel(out.filter((_, i) => i !== unknown));
    if (rest === 0 || size % rest !== 0) {
      throw new MoongradError(
        op,
        `cannot infer -1 in ${fmtShape(shape)} for ${size} elements (from ${fmtShape(from)})`,
      );
    }
    out[unknown] = size / rest;
  }
  if (numel(out) !== size) {
    throw new MoongradError(
      op,
      `cannot reshape ${fmtShape(from)} (${size} elements) to ${fmtShape(shape)} (${
        numel(out)
      } elements)`,
    );
  }
  return out;
}

/**
 * Same elements in a new shape: a view of contiguous input, otherwise a contiguous copy.
 *
 * @example Reshape, with one inferred axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.arange(6);
 * console.log(mg.reshape(x, [2, -1]).shape); // [2, 3]
 * console.log(await x.reshape([3, 2]).toArray()); // [[0, 1], [2, 3], [4, 5]]
 * ```
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = resolveShape("reshape", shape, x.size, x.shape);
  const src = x.isContiguous ? x : contiguous(x);
  const out = src.view(target, contiguousStrides(target), src.offset);
  if (src !== x) src.dispose();
  return record(out, "reshape", [x], (g) => [reshape(g, x.shape)]);
}

/**
 * Reorders axes: out axis i is input axis `axes[i]` (a view).
 *
 * @example Move the head axis forward: [B, T, H, D] -> [B, H, T, D]
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.zeros([2, 16, 4, 8]);
 * console.log(mg.permute(q, [0, 2, 1, 3]).shape); // [2, 4, 16, 8]
 * ```
 */
export function permute(x: Tensor, axes: readonly number[]): Tensor {
  const r = x.rank;
  if (!Array.isArray(axes) || axes.length !== r) {
    throw new MoongradError(
      "permute",
      `axes ${JSON.stringify(axes)} must list each of the ${r} axes of ${fmtShape(x.shape)} once`,
    );
  }
  const norm = axes.map((a) => normalizeAxis("permute", a, r));
  if (new Set(norm).size !== r) {
    throw new MoongradError(
      "permute",
      `axes ${JSON.stringify(axes)} repeat an axis (shape ${fmtShape(x.shape)})`,
    );
  }
  const out = x.view(norm.map((a) => x.shape[a]), norm.map((a) => x.strides[a]), x.offset);
  const inverse = new Array<number>(r);
  norm.forEach((a, i) => inverse[a] = i);
  return record(out, "permute", [x], (g) => [permute(g, inverse)]);
}

/**
 * Swaps axes `a` and `b` (a view).
 *
 * @example Transpose the last two axes (a view, no copy)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2, 3], [4, 5, 6]]);
 * console.log(await mg.transpose(x).toArray()); // [[1, 4], [2, 5], [3, 6]]
 * ```
 */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  if (x.rank < 2 && a === -2 && b === -1) {
    throw new MoongradError(
      "transpose",
      `needs rank >= 2 for the default axes, got ${fmtShape(x.shape)}`,
    );
  }
  const i = normalizeAxis("transpose", a, x.rank, "a");
  const j = normalizeAxis("transpose", b, x.rank, "b");
  if (x.rank === 0) return permute(x, []); // axes 0 / -1 of a scalar (PyTorch)
  const axes = [...Array(x.rank).keys()];
  axes[i] = j;
  axes[j] = i;
  return permute(x, axes);
}

/**
 * Elements start..end (exclusive, negative counts from the end) with a positive step (a view).
 *
 * @example Take a range of rows, or every other element
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.arange(10);
 * console.log(await mg.slice(x, 0, 2, 5).toArray()); // [2, 3, 4]
 * console.log(await x.slice(0, 0, undefined, 3).toArray()); // [0, 3, 6, 9]
 * console.log(await x.slice(0, -2).toArray()); // [8, 9]
 * ```
 */
export function slice(x: Tensor, axis: number, start: number, end?: number, step = 1): Tensor {
  if (x.rank === 0) {
    throw new MoongradError("slice", `cannot slice a rank-0 tensor (shape ${fmtShape(x.shape)})`);
  }
  const ax = normalizeAxis("slice", axis, x.rank);
  const n = x.shape[ax];
  if (
    !Number.isInteger(start) || (end !== undefined && !Number.isInteger(end)) ||
    !Number.isInteger(step) || step < 1
  ) {
    throw new MoongradError(
      "slice",
      `start ${start}, end ${end} must be integers and step ${step} a positive integer`,
    );
  }
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  const s = clamp(start);
  const e = Math.max(clamp(end ?? n), s);
  const len = Math.ceil((e - s) / step);
  const shape = [...x.shape];
  shape[ax] = len;
  const strides = [...x.strides];
  strides[ax] = x.strides[ax] * step;
  const out = x.view(shape, strides, x.offset + s * x.strides[ax]);
  return record(out, "slice", [x], (g, needs, _saved, priors) => {
    // With a prior (x's gradient from its other uses), one dispatch adds g into its window.
    const prior = needs[0] && g.size > 0 ? usablePrior(priors, 0, x.shape, x.dtype, g) : null;
    const dx = sliceGrad(g, x.shape, ax, s, step, prior);
    if (prior) priors!.absorb(0);
    return [dx];
  });
}

/**
 * Broadcasts to `shape` by giving stride 0 to size-1 and new leading axes (a view).
 *
 * @example Repeat a row without copying
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const row = mg.tensor([[1, 2, 3]]); // [1, 3]
 * console.log(await mg.expand(row, [2, 3]).toArray()); // [[1, 2, 3], [1, 2, 3]]
 * ```
 */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const r = shape.length;
  const lead = r - x.rank;
  if (lead < 0) {
    throw new MoongradError(
      "expand",
      `cannot expand ${fmtShape(x.shape)} to the lower rank ${fmtShape(shape)}`,
    );
  }
  const target = shape.map((d, i) => d === -1 && i >= lead ? x.shape[i - lead] : d);
  if (!target.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new MoongradError(
      "expand",
      `shape ${fmtShape(shape)} must hold non-negative integers (-1 only for existing axes of ${
        fmtShape(x.shape)
      })`,
    );
  }
  const strides = target.map((d, i) => {
    if (i < lead) return 0;
    const xd = x.shape[i - lead];
    if (xd === d) return xd === 1 ? 0 : x.strides[i - lead];
    if (xd === 1) return 0;
    throw new MoongradError(
      "expand",
      `cannot expand ${fmtShape(x.shape)} to ${fmtShape(shape)} (axis ${i}: ${xd} vs ${d})`,
    );
  });
  const out = x.view(target, strides, x.offset);
  return record(out, "expand", [x], (g) => [sumTo(g, x.shape)]);
}

/**
 * Alias of `expand`, NumPy's name.
 *
 * @example NumPy's name for expand
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(mg.broadcastTo(mg.tensor([1, 2]), [3, 2]).shape); // [3, 2]
 * ```
 */
export const broadcastTo: (x: Tensor, shape: readonly number[]) => Tensor = expand;

/**
 * Inserts a size-1 axis at `axis` (−1 appends) (a view).
 *
 * @example Add a batch axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const ids = mg.tensor([1, 2, 3], { dtype: "i32" });
 * console.log(mg.unsqueeze(ids, 0).shape, ids.unsqueeze(-1).shape); // [1, 3] [3, 1]
 * ```
 */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const ax = normalizeAxis("unsqueeze", axis, x.rank + 1);
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape.splice(ax, 0, 1);
  strides.splice(ax, 0, 0);
  const out = x.view(shape, strides, x.offset);
  return record(out, "unsqueeze", [x], (g) => [reshape(g, x.shape)]);
}

/**
 * Removes the size-1 axis `axis`, or every size-1 axis when omitted (a view).
 *
 * @example Drop size-1 axes
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.zeros([1, 3, 1]);
 * console.log(mg.squeeze(x).shape, mg.squeeze(x, 0).shape); // [3] [3, 1]
 * ```
 */
export function squeeze(x: Tensor, axis?: number): Tensor {
  let keep: number[];
  if (axis === undefined) keep = [...x.shape.keys()].filter((i) => x.shape[i] !== 1);
  else {
    const ax = normalizeAxis("squeeze", axis, x.rank);
    if (x.rank > 0 && x.shape[ax] !== 1) {
      throw new MoongradError(
        "squeeze",
        `axis ${axis} has size ${x.shape[ax]}, expected 1 (shape ${fmtShape(x.shape)})`,
      );
    }
    keep = [...x.shape.keys()].filter((i) => i !== ax);
  }
  const out = x.view(keep.map((i) => x.shape[i]), keep.map((i) => x.strides[i]), x.offset);
  return record(out, "squeeze", [x], (g) => [reshape(g, x.shape)]);
}

/** Fills a contiguous tensor with zeros in place (no graph). */
export function fillZero(t: Tensor): void {
  fillInPlace(t, 0);
}
