import type { Tensor } from "../core/tensor.ts";
/** crossEntropy. */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  options: CrossEntropyOptions = {},
): Tensor {
  throw new Error(`TODO ${logits} ${targets} ${options}`);
}
/** Options. */
export interface CrossEntropyOptions {
  /** Targets equal to this are skipped. */
  ignoreIndex?: number;
  /** "mean" | "sum" | "none". */
  reduction?: "mean" | "sum" | "none";
}
/** mseLoss. */
export function mseLoss(
  pred: Tensor,
  target: Tensor,
  options: { reduction?: "mean" | "sum" | "none" } = {},
): Tensor {
  throw new Error(`TODO ${pred} ${target} ${options}`);
}
