/**
 * The operand check of the low-level optimizer and Newton–Schulz kernels: a contiguous f32
 * tensor of an expected size (they read and write through its offset, with no strides).
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";

/** Throws a MoongradError naming `op` and `what` unless `t` is contiguous f32 with `n` elements. */
export function needContiguousF32(op: string, what: string, t: Tensor, n: number): void {
  if (t.dtype !== "f32") {
    throw new MoongradError(op, `${what} must be f32, got ${t.dtype} ${fmtShape(t.shape)}`);
  }
  if (!t.isContiguous) {
    throw new MoongradError(op, `${what} must be contiguous, got strides [${t.strides}]`);
  }
  if (t.size !== n) {
    throw new MoongradError(op, `${what} has ${t.size} elements ${fmtShape(t.shape)}, need ${n}`);
  }
}
