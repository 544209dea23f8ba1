/** Writes into strided views: copy one view into another, or fill a view with a constant. */
import { wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel, Params } from "../core/kernel.ts";
import { dispatch } from "../core/runtime.ts";
import { sameShape } from "../core/shape.ts";
import type { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

const OFFSET_FN = `
fn view_offset(i: u32, rank: u32, strides: u32, off: u32) -> u32 {
  var rem = i;
  var o = prm(off);
  for (var d = i32(rank) - 1; d >= 0; d--) {
    let dim = prm(2u + u32(d));
    o += (rem % dim) * prm(strides + u32(d));
    rem /= dim;
  }
  return o;
}`;

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
  const r = src.rank;
  const t = wgslType(src.dtype);
  const p = new Params().u(
    n,
    r,
    ...src.shape,
    ...src.strides,
    src.offset,
    ...dst.strides,
    dst.offset,
  );
  const k = kernel({
    name: "copy_into",
    bindings: [{ name: "src", type: t, access: "read" }, {
      name: "dst",
      type: t,
      access: "read_write",
    }],
    workgroupSize: [WG],
    prelude: OFFSET_FN,
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let r = prm(1u);
  let s = view_offset(i, r, 2u + r, 2u + 2u * r);
  let d = view_offset(i, r, 3u + 2u * r, 3u + 3u * r);
  dst[d] = src[s];`,
  });
  dispatch(k, [src.storage("copyInto").buf, dst.storage("copyInto").buf], p.words, grid1d(n, WG));
}

/** Sets every element of the view `dst` to `value`, in place. */
export function fillInPlace(dst: Tensor, value: number): void {
  const n = dst.size;
  if (n === 0) return;
  const r = dst.rank;
  const t = wgslType(dst.dtype);
  const p = new Params().u(n, r, ...dst.shape, ...dst.strides, dst.offset);
  if (t === "f32" || t === "f16") p.f(value);
  else if (t === "i32") p.i(value);
  else p.u(value ? 1 : 0);
  const load = t === "u32"
    ? "prm(3u + 2u * r)"
    : t === "i32"
    ? "prmi(3u + 2u * r)"
    : `${t}(prmf(3u + 2u * r))`;
  const k = kernel({
    name: "fill",
    bindings: [{ name: "dst", type: t, access: "read_write" }],
    workgroupSize: [WG],
    prelude: OFFSET_FN,
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let r = prm(1u);
  dst[view_offset(i, r, 2u + r, 2u + 2u * r)] = ${load};`,
  });
  dispatch(k, [dst.storage("fill").buf], p.words, grid1d(n, WG));
}
