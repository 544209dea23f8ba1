import type { Tensor } from "../core/tensor.ts";
/** Softmax along `axis`. */
export function softmax(x: Tensor, axis = -1): Tensor {
  throw new Error(`TODO ${x} ${axis}`);
}
/** Log-softmax along `axis`. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  throw new Error(`TODO ${x} ${axis}`);
}
