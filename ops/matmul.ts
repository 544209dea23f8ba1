import type { Tensor } from "../core/tensor.ts";
/** Matrix product. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  throw new Error(`TODO ${a} ${b}`);
}
