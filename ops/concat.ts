import type { Tensor } from "../core/tensor.ts";
/** Concatenates along axis. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  throw new Error(`TODO ${xs} ${axis}`);
}
/** Stacks along a new axis. */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  throw new Error(`TODO ${xs} ${axis}`);
}
/** Splits. */
export function split(x: Tensor, sizesOrSections: number | readonly number[], axis = 0): Tensor[] {
  throw new Error(`TODO ${x} ${sizesOrSections} ${axis}`);
}
