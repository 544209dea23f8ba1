/** `RMSNorm` layer (HF `DeepseekV3RMSNorm`), backed by the fused kernel of ops/rmsnorm.ts. */
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { ones } from "../ops/creation.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import { Module } from "./module.ts";

/**
 * Options of `RMSNorm`.
 *
 * @example DeepSeek's norm epsilon
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.RMSNormOptions = { eps: 1e-6 };
 * console.log(new mg.nn.RMSNorm(64, opts).eps); // 0.000001
 * ```
 */
export interface RMSNormOptions {
  /** Added to mean(x²) before the rsqrt (HF `rms_norm_eps`; default 1e-6). */
  eps?: number;
  /** Gain dtype (default f32). */
  dtype?: "f32" | "f16";
}

/**
 * y = x · rsqrt(mean(x²) + eps) · weight over the last axis; `weight` [dim] starts at ones.
 *
 * @example Normalise hidden states
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const norm = new mg.nn.RMSNorm(4);
 * const y = norm.forward(mg.tensor([[2, 2, 2, 2], [1, -1, 1, -1]]));
 * console.log(await y.toArray()); // [[1, 1, 1, 1], [1, -1, 1, -1]] (to f32 precision)
 * ```
 */
export class RMSNorm extends Module {
  /** Normalised size. */
  readonly dim: number;
  /** The epsilon. */
  readonly eps: number;
  /** Gain [dim]. */
  readonly weight: Tensor;

  /** Creates the norm with a gain of ones. */
  constructor(dim: number, options: RMSNormOptions = {}) {
    super();
    if (!Number.isInteger(dim) || dim <= 0) {
      throw new MoongradError("RMSNorm", `dim must be a positive integer, got ${dim}`);
    }
    const eps = options.eps ?? 1e-6;
    if (!Number.isFinite(eps) || eps < 0) {
      throw new MoongradError("RMSNorm", `eps must be a finite number >= 0, got ${eps}`);
    }
    this.dim = dim;
    this.eps = eps;
    this.weight = this.param("weight", ones([dim], { dtype: options.dtype ?? "f32" }));
  }

  /** x [..., dim] → normalised x [..., dim]. */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}
