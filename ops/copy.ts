/**
 * Writes into strided views: copy one view into another, fill a view with a constant, or build
 * a slice's gradient (the gradient in its window, zeros elsewhere) in one pass.
 */
import { wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { fitLength, params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { sameShape } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** Largest rank of a copy: n, rank, two offsets and three rank-length arrays fill the block. */
const R = fitLength(4, 3);

/** copy_into: the shape, then source and destination strides and offsets. */
const COPY = params("copy_into", {
  n: "u32",
  rank: "u32",
  shape: ["u32", R],
  srcStrides: ["u32", R],
  srcOffset: "u32",
  dstStrides: ["u32", R],
  dstOffset: "u32",
});

/** fill: the destination view and the value (declared per value type). */
const FILL_VIEW = {
  n: "u32",
  rank: "u32",
  shape: ["u32", R],
  strides: ["u32", R],
  offset: "u32",
} as const;
const FILL = {
  f32: params("fill", { ...FILL_VIEW, value: "f32" }),
  i32: params("fill", { ...FILL_VIEW, value: "i32" }),
  u32: params("fill", { ...FILL_VIEW, value: "u32" }),
};

/** The element offset of linear index `i` in a view (shape from p_shape), `src` or `dst`. */
function offsetFn(fn: string, strides: string, offset: string): string {
  return `
fn ${fn}(i: u32) -> u32 {
  var rem = i;
  var o = ${offset}();
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    o += (rem % dim) * ${strides}(u32(d));
    rem /= dim;
  }
  return o;
}`;
}

/** Copies `src` into the view `dst` (same shape and dtype), element by element, in place. */
export function copyInto(src: Tensor, dst: Tensor): void {
  if (!sameShape(src.shape, dst.shape) || src.dtype !== dst.dtype) {
    throw new MoongradError(
      "copyInto",
      `src ${src.dtype} ${fmtShape(src.shape)} must match dst ${dst.dtype} ${fmtShape(dst.shape)}`,
    );
  }
  if (src.storage("copyInto").buf === dst.storage("copyInto").buf) {
    throw new MoongradError(
      "copyInto",
      "src and dst share storage; copy src first (src.contiguous())",
    );
  }
  const n = src.size;
  if (n === 0) return;
  const t = wgslType(src.dtype);
  const words = COPY.pack({
    n,
    rank: src.rank,
    shape: src.shape,
    srcStrides: src.strides,
    srcOffset: src.offset,
    dstStrides: dst.strides,
    dstOffset: dst.offset,
  });
  const k = kernel({
    name: "copy_into",
    bindings: [{ name: "src", type: t, access: "read" }, {
      name: "dst",
      type: t,
      access: "read_write",
    }],
    workgroupSize: [WG],
    params: COPY,
    prelude: offsetFn("src_offset", "p_srcStrides", "p_srcOffset") +
      offsetFn("dst_offset", "p_dstStrides", "p_dstOffset"),
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  dst[dst_offset(i)] = src[src_offset(i)];`,
  });
  dispatch(k, [src.storage("copyInto").buf, dst.storage("copyInto").buf], words, grid1d(n, WG));
}

/** Sets every element of the view `dst` to `value`, in place. */
export function fillInPlace(dst: Tensor, value: number): void {
  const n = dst.size;
  if (n === 0) return;
  const t = wgslType(dst.dtype);
  const P = t === "f32" || t === "f16" ? FILL.f32 : t === "i32" ? FILL.i32 : FILL.u32;
  const view = { n, rank: dst.rank, shape: dst.shape, strides: dst.strides, offset: dst.offset };
  // Integers truncate toward zero, bool is value != 0 (as mg.tensor converts).
  const v = t === "u32" ? (value ? 1 : 0) : t === "i32" ? Math.trunc(value) : value;
  const words = P.pack({ ...view, value: v });
  const load = t === "f16" ? "f16(p_value())" : "p_value()";
  const k = kernel({
    name: "fill",
    pairable: true,
    bindings: [{ name: "dst", type: t, access: "read_write" }],
    workgroupSize: [WG],
    params: P,
    prelude: offsetFn("view_offset", "p_strides", "p_offset"),
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  dst[view_offset(i)] = ${load};`,
  });
  dispatch(k, [dst.storage("fill").buf], words, grid1d(n, WG));
}

/** Largest rank of slice_grad: 9 scalar words and two rank-length arrays. */
const RS = fitLength(9, 2);

/**
 * slice_grad: the output shape, g's strides and offset, the window on `axis`, and the offset
 * of the prior gradient it accumulates onto (when it has one).
 */
const SLICE_GRAD = params("slice_grad", {
  n: "u32",
  rank: "u32",
  shape: ["u32", RS],
  gStrides: ["u32", RS],
  gOffset: "u32",
  axis: "u32",
  start: "u32",
  step: "u32",
  len: "u32",
  priorOffset: "u32",
});

/**
 * The gradient of `slice`: a new contiguous tensor of `shape` holding `g` (any strided view)
 * in the window start, start + step, … of `axis` and zeros elsewhere, in one dispatch (a fill
 * and a copy before). With `prior` (contiguous, `shape`, g's dtype: the gradient the sliced
 * tensor accumulated from its other uses in a backward pass), the result is prior + that, in
 * the same one dispatch: prior + g in the window and prior + 0 elsewhere, summed in f32 and
 * rounded once, bit-identical to `add(prior, sliceGrad(g))` (two dispatches).
 */
export function sliceGrad(
  g: Tensor,
  shape: readonly number[],
  axis: number,
  start: number,
  step: number,
  prior: Tensor | null = null,
): Tensor {
  const out = Tensor.empty(shape, g.dtype);
  const n = out.size;
  if (n === 0) return out;
  if (g.size === 0) {
    if (prior) throw new MoongradError("sliceGrad", "an empty window cannot take a prior");
    fillInPlace(out, 0);
    return out;
  }
  const t = wgslType(g.dtype);
  const words = SLICE_GRAD.pack({
    n,
    rank: shape.length,
    shape,
    gStrides: g.strides,
    gOffset: g.offset,
    axis,
    start,
    step,
    len: g.shape[axis],
    priorOffset: prior?.offset ?? 0,
  });
  const bindings = [
    { name: "g", type: t, access: "read" as const },
    { name: "out", type: t, access: "read_write" as const },
  ];
  if (prior) bindings.push({ name: "prior", type: t, access: "read" });
  // g[o] is read only inside the window (o is meaningless outside, and g may be empty).
  const store = !prior ? `if (inside) { out[i] = g[o]; } else { out[i] = ${t}(0); }` : `var v = 0.0;
  if (inside) { v = f32(g[o]); }
  out[i] = ${
    t === "f32" ? "prior[p_priorOffset() + i] + v" : `${t}(f32(prior[p_priorOffset() + i]) + v)`
  };`;
  const k = kernel({
    name: "slice_grad",
    bindings,
    workgroupSize: [WG],
    params: SLICE_GRAD,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  var rem = i;
  var o = p_gOffset();
  var inside = true;
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    var c = rem % dim;
    rem /= dim;
    if (u32(d) == p_axis()) {
      let rel = c - min(c, p_start());
      inside = c >= p_start() && rel % p_step() == 0u && rel / p_step() < p_len();
      c = rel / p_step();
    }
    o += c * p_gStrides(u32(d));
  }
  ${store}`,
  });
  const bufs = [g, out, ...(prior ? [prior] : [])].map((x) => x.storage("slice").buf);
  dispatch(k, bufs, words, grid1d(n, WG));
  return out;
}
