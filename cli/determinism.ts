/**
 * Bit-reproducible training. Every gradient of the model is deterministic except the token
 * embedding's: its backward (`indexAdd`) sums the rows of repeated ids with f32 atomics, whose
 * order varies between runs, so two identical runs drift apart in the last bits after one
 * step. The trainer therefore computes the embedding as one-hot(ids) · W — bit-identical
 * forward values (each output row is one weight row plus exact zeros) with a matmul backward,
 * whose summation order is fixed. It costs 2·V·D flops per token (1 % of the tiny model's).
 */
import { noGrad } from "../core/autograd.ts";
import type { Tensor } from "../core/tensor.ts";
import { arange } from "../ops/creation.ts";
import { cast, eq } from "../ops/elementwise.ts";
import { reshape, unsqueeze } from "../ops/layout.ts";
import { matmul } from "../ops/matmul.ts";
import type { KimiLM } from "../nn/model.ts";

/** ids (i32, any shape) → one-hot(ids) [N, V] · weight [V, D], reshaped to [...ids.shape, D]. */
export function oneHotEmbedding(weight: Tensor, ids: Tensor): Tensor {
  const [V, D] = weight.shape;
  const oneHot = noGrad(() => {
    const flat = reshape(ids, [ids.size, 1]);
    const range = unsqueeze(arange(0, V, 1, { dtype: "i32" }), 0);
    const mask = eq(flat, range);
    const f = cast(mask, "f32");
    for (const t of [flat, range, mask]) t.dispose();
    return f;
  });
  const rows = matmul(oneHot, weight);
  oneHot.dispose();
  const out = reshape(rows, [...ids.shape, D]);
  rows.dispose();
  return out;
}

/** Makes `model`'s token embedding use `oneHotEmbedding` (deterministic gradients). */
export function useDeterministicEmbedding(model: KimiLM): void {
  const emb = model.model.embedTokens;
  emb.forward = (ids: Tensor) => oneHotEmbedding(emb.weight, ids);
}
