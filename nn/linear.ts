/** `Linear`: y = x Wᵀ + b over the last axis, with HF's weight layout [out, in]. */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { isFloat } from "../core/dtype.ts";
import { scope } from "../core/scope.ts";
import { Tensor } from "../core/tensor.ts";
import { add } from "../ops/elementwise.ts";
import { transpose } from "../ops/layout.ts";
import { addmm, matmul } from "../ops/matmul.ts";
import { deriveSeed, type InitOptions, Module, normalInit, zerosInit } from "./module.ts";

/**
 * Options of `Linear`.
 *
 * @example A projection without bias, as in DeepSeek / Kimi
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.LinearOptions = { bias: false, std: 0.02, seed: 0 };
 * const proj = new mg.nn.Linear(64, 32, opts);
 * console.log(proj.bias, proj.weight.shape); // null [32, 64]
 * ```
 */
export interface LinearOptions extends InitOptions {
  /** Add a learned bias (default true, as in PyTorch; HF DeepSeek layers use false). */
  bias?: boolean;
}

/**
 * A fully connected layer: `weight` [out, in] drawn from N(0, std²) (std = HF
 * `initializer_range`, 0.02 by default), `bias` [out] zeros. Accepts any leading axes:
 * [..., in] → [..., out]. The transposed weight is a view read in place by matmul.
 *
 * @example y = x Wᵀ + b over the last axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(16, 4, { seed: 0 });
 * const x = mg.randn([2, 10, 16], { seed: 1 }); // any leading axes
 * const y = lin.forward(x);
 * console.log(y.shape, [...lin.stateDict().keys()]); // [2, 10, 4] ["weight", "bias"]
 * ```
 */
export class Linear extends Module {
  /** Input features. */
  readonly inFeatures: number;
  /** Output features. */
  readonly outFeatures: number;
  /** Weight [out, in]. */
  readonly weight: Tensor;
  /** Bias [out], or null. */
  readonly bias: Tensor | null;

  /** Creates the layer with seeded HF-style initialisation. */
  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    for (const [arg, v] of [["inFeatures", inFeatures], ["outFeatures", outFeatures]] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new MoongradError("Linear", `${arg} must be a positive integer, got ${v}`);
      }
    }
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    try {
      this.weight = this.param(
        "weight",
        normalInit([outFeatures, inFeatures], { ...options, seed: deriveSeed(options.seed, "w") }),
      );
      this.bias = options.bias ?? true
        ? this.param("bias", zerosInit([outFeatures], options))
        : null;
    } catch (e) {
      this.dispose(); // what was made before the error
      throw e;
    }
  }

  /**
   * x [..., in] → x Wᵀ + b [..., out]; with `residual` (shaped like the output), residual +
   * x Wᵀ + b, the residual added in the product's epilogue (`addmm`: no separate add).
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    if (!(x instanceof Tensor)) {
      throw new MoongradError("Linear.forward", `x must be a Tensor, got ${typeof x}`);
    }
    if (x.rank < 1 || x.shape[x.rank - 1] !== this.inFeatures || !isFloat(x.dtype)) {
      throw new MoongradError(
        "Linear.forward",
        `x must be float [..., ${this.inFeatures}], got ${x.dtype} ${fmtShape(x.shape)} ` +
          `(weight ${fmtShape(this.weight.shape)})`,
      );
    }
    if (x.dtype !== this.weight.dtype) {
      throw new MoongradError(
        "Linear.forward",
        `x is ${x.dtype} but the weight is ${this.weight.dtype}; cast x first`,
      );
    }
    return scope(() => {
      const w = transpose(this.weight, 0, 1);
      const y = residual ? addmm(residual, x, w) : matmul(x, w);
      return this.bias ? add(y, this.bias) : y;
    });
  }
}
