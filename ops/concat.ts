/**
 * Joining and splitting along an axis: concat, stack, split.
 *
 * `concat` allocates the output once and copies each input into its window of the output
 * with `copyInto` (one strided-copy dispatch per non-empty input, so inputs may be any
 * views). Its backward hands each input the matching slice (a view) of the gradient.
 * `split` returns views (`slice`), whose backward is `slice`'s own.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { normalizeAxis } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { copyInto } from "./copy.ts";
import { contiguous } from "./elementwise.ts";
import { slice, unsqueeze } from "./layout.ts";

function checkList(op: string, xs: unknown): Tensor[] {
  if (!Array.isArray(xs) || xs.length === 0) {
    throw new MoongradError(op, `xs must be a non-empty array of tensors, got ${String(xs)}`);
  }
  xs.forEach((x, i) => {
    if (!(x instanceof Tensor)) {
      throw new MoongradError(op, `xs[${i}] must be a Tensor, got ${typeof x}`);
    }
    x.storage(op);
  });
  return xs as Tensor[];
}

function describe(xs: readonly Tensor[]): string {
  return xs.map((x) => `${x.dtype} ${fmtShape(x.shape)}`).join(", ");
}

/**
 * Joins tensors along an existing `axis` (negative counts from the end), like `torch.cat`.
 * All inputs need the same dtype and rank (at least 1) and equal sizes on every other axis;
 * inputs of size 0 along `axis` are allowed. The result is a new contiguous tensor.
 * Backward: each input receives a contiguous copy of its slice of the gradient (a copy, so
 * that input gradients never share one buffer).
 *
 * @example Join along an existing axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([[1, 2]]);
 * const b = mg.tensor([[3, 4], [5, 6]]);
 * console.log(await mg.concat([a, b]).toArray()); // [[1, 2], [3, 4], [5, 6]]
 * console.log(mg.concat([b, b], -1).shape); // [2, 4]
 * ```
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  const list = checkList("concat", xs);
  const first = list[0];
  if (first.rank === 0) {
    throw new MoongradError(
      "concat",
      "zero-dimensional tensors cannot be concatenated (use stack to add an axis)",
    );
  }
  const ax = normalizeAxis("concat", axis, first.rank);
  let total = 0;
  list.forEach((x, i) => {
    if (x.dtype !== first.dtype) {
      throw new MoongradError(
        "concat",
        `xs[${i}] has dtype ${x.dtype}, expected ${first.dtype} like xs[0] (inputs: ${
          describe(list)
        })`,
      );
    }
    const sameOther = x.rank === first.rank &&
      x.shape.every((d, j) => j === ax || d === first.shape[j]);
    if (!sameOther) {
      throw new MoongradError(
        "concat",
        `xs[${i}] shape ${fmtShape(x.shape)} must match xs[0] ${
          fmtShape(first.shape)
        } on every axis but ${ax} (inputs: ${describe(list)})`,
      );
    }
    total += x.shape[ax];
  });
  const outShape = [...first.shape];
  outShape[ax] = total;
  const out = Tensor.empty(outShape, first.dtype);
  const starts: number[] = [];
  let start = 0;
  for (const x of list) {
    starts.push(start);
    if (x.size > 0) {
      const window = out.view(x.shape, out.strides, start * out.strides[ax]);
      copyInto(x, window);
      window.dispose();
    }
    start += x.shape[ax];
  }
  return record(out, "concat", list, (g, needs) =>
    list.map((x, i) => {
      if (!needs[i]) return null;
      const window = slice(g, ax, starts[i], starts[i] + x.shape[ax]);
      const grad = contiguous(window);
      window.dispose();
      return grad;
    }));
}

/**
 * Joins tensors of identical shape and dtype along a new axis `axis` (in 0..rank, negative
 * counts from rank + 1), like `torch.stack`: the concat of the inputs unsqueezed at `axis`.
 *
 * @example Stack along a new axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const xs = [mg.tensor([1, 2]), mg.tensor([3, 4]), mg.tensor([5, 6])];
 * console.log(mg.stack(xs).shape, mg.stack(xs, 1).shape); // [3, 2] [2, 3]
 * ```
 */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  const list = checkList("stack", xs);
  const first = list[0];
  list.forEach((x, i) => {
    const same = x.rank === first.rank && x.shape.every((d, j) => d === first.shape[j]);
    if (!same || x.dtype !== first.dtype) {
      throw new MoongradError(
        "stack",
        `xs[${i}] is ${x.dtype} ${fmtShape(x.shape)}, expected ${first.dtype} ${
          fmtShape(first.shape)
        } like xs[0] (stack needs equal shapes and dtypes)`,
      );
    }
  });
  const ax = normalizeAxis("stack", axis, first.rank + 1);
  const parts = list.map((x) => unsqueeze(x, ax));
  try {
    return concat(parts, ax);
  } finally {
    for (const p of parts) p.dispose();
  }
}

/**
 * Splits `x` along `axis` into views, like `torch.split`:
 * - a number `size` (a positive integer) gives pieces of `size` elements, the last one
 *   smaller when `size` does not divide the axis length (an axis of length 0 gives one empty
 *   piece);
 * - an array gives pieces of exactly those sizes (non-negative integers summing to the axis
 *   length).
 *
 * (This is not NumPy's `array_split(x, n)`, which makes `n` equal sections.) Each piece is a
 * `slice` view sharing `x`'s storage; gradients flow back through `slice`.
 *
 * @example Split the fused q, k, v projections
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const qkv = mg.arange(12).reshape([2, 6]);
 * const [q, k, v] = mg.split(qkv, 2, 1); // pieces of 2 columns
 * console.log(await v.toArray()); // [[4, 5], [10, 11]]
 * const [head, rest] = qkv.split([1, 5], 1); // exact sizes
 * console.log(head.shape, rest.shape, q.shape, k.shape); // [2, 1] [2, 5] [2, 2] [2, 2]
 * ```
 */
export function split(x: Tensor, sizesOrSections: number | readonly number[], axis = 0): Tensor[] {
  if (!(x instanceof Tensor)) {
    throw new MoongradError("split", `x must be a Tensor, got ${typeof x}`);
  }
  x.storage("split");
  if (x.rank === 0) {
    throw new MoongradError("split", "cannot split a zero-dimensional tensor");
  }
  const ax = normalizeAxis("split", axis, x.rank);
  const n = x.shape[ax];
  let sizes: number[];
  if (typeof sizesOrSections === "number") {
    const size = sizesOrSections;
    if (!Number.isInteger(size) || size < 1) {
      throw new MoongradError(
        "split",
        `split size must be a positive integer, got ${size} (x ${fmtShape(x.shape)}, axis ${ax})`,
      );
    }
    sizes = [];
    for (let s = 0; s < n; s += size) sizes.push(Math.min(size, n - s));
    if (n === 0) sizes.push(0);
  } else if (Array.isArray(sizesOrSections)) {
    sizes = [...sizesOrSections];
    const sum = sizes.reduce((a, b) => a + b, 0);
    if (sizes.length === 0 || !sizes.every((s) => Number.isInteger(s) && s >= 0) || sum !== n) {
      throw new MoongradError(
        "split",
        `sizes ${JSON.stringify(sizes)} must be non-negative integers summing to ${n}, the ` +
          `length of axis ${ax} of ${fmtShape(x.shape)}`,
      );
    }
  } else {
    throw new MoongradError(
      "split",
      `sizesOrSections must be a number or an array of numbers, got ${typeof sizesOrSections}`,
    );
  }
  const out: Tensor[] = [];
  let start = 0;
  for (const s of sizes) {
    out.push(slice(x, ax, start, start + s));
    start += s;
  }
  return out;
}
