import type { Tensor } from "../core/tensor.ts";
/** indexSelect. */
export function indexSelect(x: Tensor, axis: number, index: Tensor): Tensor {
  throw new Error(`TODO ${x} ${axis} ${index}`);
}
/** gather. */
export function gather(x: Tensor, axis: number, index: Tensor): Tensor {
  throw new Error(`TODO ${x} ${axis} ${index}`);
}
/** embedding. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  throw new Error(`TODO ${weight} ${ids}`);
}
/** scatterAdd. */
export function scatterAdd(x: Tensor, axis: number, index: Tensor, src: Tensor): Tensor {
  throw new Error(`TODO ${x} ${axis} ${index} ${src}`);
}
/** indexAdd. */
export function indexAdd(x: Tensor, axis: number, index: Tensor, src: Tensor): Tensor {
  throw new Error(`TODO ${x} ${axis} ${index} ${src}`);
}
/** topk. */
export function topk(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
  throw new Error(`TODO ${x} ${k}`);
}
