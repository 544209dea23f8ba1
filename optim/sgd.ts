/** Stochastic gradient descent with momentum, Nesterov and (coupled) weight decay. */
import { MoongradError } from "../core/errors.ts";
import { sgdUpdate } from "../ops/optim.ts";
import {
  type BaseOptions,
  type CommonOptions,
  Optimizer,
  type ParamsInput,
  type UpdateContext,
} from "./optimizer.ts";

/**
 * SGD hyper-parameters (torch.optim.SGD's).
 *
 * @example Nesterov momentum with weight decay
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: Partial<mg.optim.SgdOptions> = { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-4 };
 * ```
 */
export interface SgdOptions extends BaseOptions {
  /** Momentum factor μ (default 0: no buffer). */
  momentum: number;
  /** Dampening of the gradient added to the buffer (default 0). */
  dampening: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay: number;
  /** Nesterov momentum (default false; needs momentum > 0 and dampening 0). */
  nesterov: boolean;
}

/**
 * SGD, torch.optim.SGD's arithmetic, one fused kernel per parameter:
 * g ← g + wd·p; buf ← μ·buf + (1 − dampening)·g (buf = g at the first step);
 * p ← p − lr·(nesterov ? g + μ·buf : buf).
 *
 * @example Fit a linear layer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 1, { seed: 0 });
 * const opt = new mg.optim.SGD(lin, { lr: 0.1, momentum: 0.9 });
 * const x = mg.randn([16, 8], { seed: 1 }), y = mg.randn([16, 1], { seed: 2 });
 * for (let i = 0; i < 10; i++) {
 *   mg.scope(() => mg.mseLoss(lin.forward(x), y).backward());
 *   await opt.step();
 *   opt.zeroGrad();
 * }
 * ```
 */
export class SGD extends Optimizer<SgdOptions> {
  /** `options` are the defaults of every group (lr required). */
  constructor(
    params: ParamsInput<SgdOptions>,
    options: Partial<SgdOptions> & Pick<SgdOptions, "lr"> & CommonOptions,
  ) {
    const { checkFinite, ...rest } = options;
    super("SGD", params, { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...rest }, {
      checkFinite,
    });
  }

  /** Checks momentum, dampening, weight decay and the Nesterov conditions. */
  protected override validateOptions(o: SgdOptions): void {
    super.validateOptions(o);
    for (const k of ["momentum", "dampening", "weightDecay"] as const) {
      if (!(Number.isFinite(o[k]) && o[k] >= 0)) {
        throw new MoongradError("SGD", `${k} must be a finite number >= 0, got ${o[k]}`);
      }
    }
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new MoongradError("SGD", "nesterov needs momentum > 0 and dampening 0");
    }
  }

  /** One fused SGD update. */
  protected update({ param, grad, state, options: o, lr }: UpdateContext<SgdOptions>): void {
    const hasMomentum = o.momentum !== 0;
    const first = hasMomentum && !this.hasSlot(state, "momentum_buffer");
    const buf = hasMomentum ? this.slot(param, state, "momentum_buffer") : null;
    sgdUpdate(param, grad, buf, {
      lr,
      momentum: o.momentum,
      dampening: o.dampening,
      weightDecay: o.weightDecay,
      nesterov: o.nesterov,
      first,
    });
  }
}
