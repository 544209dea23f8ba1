/** SwiGLU feed-forward block (HF `DeepseekV3MLP`): down(silu(gate(x)) ⊙ up(x)). */
import { checkAllocation } from "../core/limits.ts";
import { MoongradError } from "../core/errors.ts";
import { scope } from "../core/scope.ts";
import type { Tensor } from "../core/tensor.ts";
import { swiglu } from "../ops/swiglu.ts";
import { Linear } from "./linear.ts";
import { deriveSeed, type InitOptions, Module } from "./module.ts";

/**
 * The gated MLP of DeepSeek / Kimi: `gate_proj` and `up_proj` [intermediate, hidden],
 * `down_proj` [hidden, intermediate], all without bias (HF names), initialised N(0, std²).
 *
 * @example The SwiGLU block of the dense layers and the experts
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const mlp = new mg.nn.MLP(64, 256, { seed: 0 });
 * console.log(mlp.forward(mg.randn([2, 8, 64], { seed: 1 })).shape); // [2, 8, 64]
 * console.log([...mlp.stateDict().keys()]); // ["gate_proj.weight", "up_proj.weight", "down_proj.weight"]
 * ```
 */
export class MLP extends Module {
  /** Model width. */
  readonly hiddenSize: number;
  /** Inner width. */
  readonly intermediateSize: number;
  /** hidden → intermediate, through silu. */
  readonly gateProj: Linear;
  /** hidden → intermediate. */
  readonly upProj: Linear;
  /** intermediate → hidden. */
  readonly downProj: Linear;

  /** Creates the block; `options.seed` seeds each projection differently. */
  constructor(hiddenSize: number, intermediateSize: number, options: InitOptions = {}) {
    super();
    for (const [arg, v] of [["hiddenSize", hiddenSize], ["intermediateSize", intermediateSize]]) {
      if (!Number.isInteger(v) || (v as number) <= 0) {
        throw new MoongradError("MLP", `${arg} must be a positive integer, got ${v}`);
      }
    }
    this.hiddenSize = hiddenSize;
    this.intermediateSize = intermediateSize;
    checkAllocation([intermediateSize, hiddenSize], "f32", "MLP (gate_proj.weight)");
    const make = (name: string, i: number, o: number) =>
      this.module(
        name,
        new Linear(i, o, { ...options, bias: false, seed: deriveSeed(options.seed, name) }),
      );
    try {
      this.gateProj = make("gate_proj", hiddenSize, intermediateSize);
      this.upProj = make("up_proj", hiddenSize, intermediateSize);
      this.downProj = make("down_proj", intermediateSize, hiddenSize);
    } catch (e) {
      this.dispose(); // the projections made before the error
      throw e;
    }
  }

  /**
   * x [..., hidden] → [..., hidden]. Intermediates are freed as soon as they are used: each
   * `scope` frees what was made inside it once the step that consumes it has run. With
   * `residual` (shaped like the output), returns residual + MLP(x), the sum formed in
   * down_proj's epilogue (`addmm`).
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return scope(() => {
      const h = scope(() => swiglu(this.gateProj.forward(x), this.upProj.forward(x)));
      return this.downProj.forward(h, residual);
    });
  }
}
