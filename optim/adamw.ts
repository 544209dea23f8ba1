/** AdamW: Adam with decoupled weight decay and bias correction. */
import { MoongradError } from "../core/errors.ts";
import { contiguous } from "../ops/elementwise.ts";
import { adamwUpdateMany } from "../ops/adamw_multi.ts";
import type { Tensor } from "../core/tensor.ts";
import {
  type BaseOptions,
  type CommonOptions,
  Optimizer,
  type ParamsInput,
  type UpdateContext,
} from "./optimizer.ts";

/**
 * AdamW hyper-parameters (torch.optim.AdamW's, camel-cased).
 *
 * @example torch.optim.AdamW's defaults, spelled out
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.AdamWOptions = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 };
 * ```
 */
export interface AdamWOptions extends BaseOptions {
  /** (β₁, β₂) (default [0.9, 0.999]). */
  betas: readonly [number, number];
  /** ε added to √v̂ (default 1e-8). */
  eps: number;
  /** Decoupled weight decay (default 0.01): p ← p·(1 − lr·wd) before the Adam step. */
  weightDecay: number;
}

/**
 * AdamW, torch.optim.AdamW's arithmetic, fused, several parameters per launch:
 * p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
 * p ← p − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε), t = this parameter's update count.
 *
 * @example Train a layer with AdamW
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const opt = new mg.optim.AdamW(lin, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
 * mg.scope(() => lin.forward(mg.randn([2, 8], { seed: 1 })).square().mean().backward());
 * await opt.step(); // fused multi-tensor kernels, nothing read back
 * opt.zeroGrad();
 * ```
 */
export class AdamW extends Optimizer<AdamWOptions> {
  /** `options` are the defaults of every group (lr required). */
  constructor(
    params: ParamsInput<AdamWOptions>,
    options: Partial<AdamWOptions> & Pick<AdamWOptions, "lr"> & CommonOptions,
  ) {
    const { checkFinite, ...rest } = options;
    super("AdamW", params, { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, ...rest }, {
      checkFinite,
    });
  }

  /** Checks betas in [0, 1), eps > 0 and weight decay >= 0. */
  protected override validateOptions(o: AdamWOptions): void {
    super.validateOptions(o);
    const b = o.betas;
    if (!Array.isArray(b) || b.length !== 2 || !b.every((x) => x >= 0 && x < 1)) {
      throw new MoongradError(
        "AdamW",
        `betas must be two numbers in [0, 1), got ${JSON.stringify(b)}`,
      );
    }
    if (!(o.eps > 0)) throw new MoongradError("AdamW", `eps must be > 0, got ${o.eps}`);
    if (!(Number.isFinite(o.weightDecay) && o.weightDecay >= 0)) {
      throw new MoongradError(
        "AdamW",
        `weightDecay must be a finite number >= 0, got ${o.weightDecay}`,
      );
    }
  }

  /**
   * The step: multi-tensor launches (up to 4 parameters each, ops/adamw_multi.ts) per
   * parameter group, reading strided gradients (rank ≤ 3, e.g. the transposed weight
   * gradients of linear layers) in place instead of copying them first.
   */
  protected override updateAll(items: UpdateContext<AdamWOptions>[]): void {
    const byOptions = new Map<AdamWOptions, UpdateContext<AdamWOptions>[]>();
    for (const c of items) {
      const list = byOptions.get(c.options);
      if (list) list.push(c);
      else byOptions.set(c.options, [c]);
    }
    for (const [o, list] of byOptions) {
      const copies: Tensor[] = [];
      try {
        const [b1, b2] = o.betas;
        adamwUpdateMany(
          list.map(({ param, grad: g, state }) => {
            const direct = g.isContiguous || (g.rank <= 3 && g.strides.every((s) => s >= 0));
            const grad = direct ? g : contiguous(g);
            if (grad !== g) copies.push(grad);
            return {
              param,
              grad,
              expAvg: this.slot(param, state, "exp_avg"),
              expAvgSq: this.slot(param, state, "exp_avg_sq"),
              biasCorrection1: 1 - b1 ** state.step,
              biasCorrection2: 1 - b2 ** state.step,
            };
          }),
          { lr: list[0].lr, beta1: b1, beta2: b2, eps: o.eps, weightDecay: o.weightDecay },
        );
      } finally {
        copies.forEach((t) => t.dispose());
      }
    }
  }

  /** One parameter's update (the multi-tensor step with one parameter). */
  protected update(ctx: UpdateContext<AdamWOptions>): void {
    this.updateAll([ctx]);
  }
}
