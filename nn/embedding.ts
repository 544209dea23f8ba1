/** `Embedding`: a lookup table of token vectors (HF `embed_tokens`). */
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { embedding } from "../ops/indexing.ts";
import { deriveSeed, type InitOptions, Module, normalInit } from "./module.ts";

/**
 * A table `weight` [numEmbeddings, dim] drawn from N(0, std²) (HF `initializer_range`).
 * `forward(ids)` maps i32 ids of any shape to [...ids.shape, dim]; its gradient sums the rows
 * of repeated ids.
 *
 * @example Token ids to vectors
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const embed = new mg.nn.Embedding(256, 32, { seed: 0 });
 * const ids = mg.tensor([[72, 105, 33]], { dtype: "i32" });
 * console.log(embed.forward(ids).shape); // [1, 3, 32]
 * ```
 */
export class Embedding extends Module {
  /** Vocabulary size. */
  readonly numEmbeddings: number;
  /** Vector size. */
  readonly dim: number;
  /** The table [numEmbeddings, dim]. */
  readonly weight: Tensor;

  /** Creates the table with seeded HF-style initialisation. */
  constructor(numEmbeddings: number, dim: number, options: InitOptions = {}) {
    super();
    for (const [arg, v] of [["numEmbeddings", numEmbeddings], ["dim", dim]] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new MoongradError("Embedding", `${arg} must be a positive integer, got ${v}`);
      }
    }
    this.numEmbeddings = numEmbeddings;
    this.dim = dim;
    this.weight = this.param(
      "weight",
      normalInit([numEmbeddings, dim], { ...options, seed: deriveSeed(options.seed, "w") }),
    );
  }

  /** ids (i32, any shape) → vectors [...ids.shape, dim]. */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }
}
