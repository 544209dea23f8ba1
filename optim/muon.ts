/** Muon: momentum orthogonalised by Newton–Schulz (Moonlight / Kimi K2 form, REFERENCE §2). */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { muonGather, muonScatterApply } from "../ops/muon_batch.ts";
import { planNsGroups } from "./muon_batch.ts";
import {
  newtonSchulz,
  type NewtonSchulzOptions,
  type NsCoefficients,
  type NsMethod,
  nsSchedule,
} from "./newton_schulz.ts";
import {
  type BaseOptions,
  type CommonOptions,
  Optimizer,
  type ParamsInput,
  type UpdateContext,
} from "./optimizer.ts";

/**
 * How Muon scales the orthogonalised update of an [A, B] matrix.
 *
 * @example Pick the update scale
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const s: mg.optim.MuonScale = "original"; // √max(1, A/B), Keller Jordan's
 * ```
 */
export type MuonScale = "match_rms_adamw" | "original";

/**
 * Muon hyper-parameters.
 *
 * @example Moonlight's Muon settings
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: Partial<mg.optim.MuonOptions> = {
 *   lr: 2e-4,
 *   momentum: 0.95,
 *   nesterov: true,
 *   weightDecay: 0.1,
 *   scale: "match_rms_adamw",
 *   nsSteps: 5,
 * };
 * ```
 */
export interface MuonOptions extends BaseOptions {
  /** Momentum μ (default 0.95). */
  momentum: number;
  /** Nesterov: orthogonalise G + μ·M instead of M (default true). */
  nesterov: boolean;
  /** Decoupled weight decay: W ← W − lr·wd·W (default 0.1, Moonlight/K2). */
  weightDecay: number;
  /**
   * "match_rms_adamw" (default): 0.2·√max(A, B), which gives the update an RMS of about 0.2
   * like AdamW's, so AdamW's lr and weight decay carry over; "original" (Keller Jordan):
   * √max(1, A/B).
   */
  scale: MuonScale;
  /** Momentum form: false (default) the sum M ← μM + G; true the EMA M ← μM + (1−μ)G. */
  ema: boolean;
  /** Newton–Schulz iterations (default 5). */
  nsSteps: number;
  /** Newton–Schulz coefficients: one triple or one per step (default the quintic). */
  nsCoefficients: NsCoefficients | readonly NsCoefficients[];
  /** Newton–Schulz normalisation eps (default 1e-7). */
  nsEps: number;
  /** "standard" (default) or "gram" (iterate on X·Xᵀ; cheaper for far-from-square matrices). */
  nsMethod: NsMethod;
  /** Gram method: steps after which it restarts from the current iterate (default [2]). */
  nsRestarts: readonly number[];
  /**
   * Batched Newton–Schulz: the largest share of zero padding when smaller matrices join a
   * larger shape's batch (default 0.25; 0 batches equal shapes only). Padding is exact; it
   * trades launches for flops (optim/muon_batch.ts).
   */
  nsPadSlack: number;
  /**
   * Batched Newton–Schulz: the largest batch in bytes (default 64 MiB, at most the device's
   * storage binding limit). A batch and its Newton–Schulz temporaries (about 4× the batch) are
   * the step's peak extra memory; a larger shape group splits into several batches.
   */
  nsMaxBatchBytes: number;
}

/**
 * The scale factor Muon applies to NS(U) for an [A, B] matrix.
 *
 * @example The scale of a [1024, 4096] matrix
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.optim.muonScale("match_rms_adamw", 1024, 4096)); // 12.8 (0.2·√4096)
 * console.log(mg.optim.muonScale("original", 4096, 1024)); // 2 (√(4096/1024))
 * ```
 */
export function muonScale(scale: MuonScale, A: number, B: number): number {
  return scale === "original" ? Math.sqrt(Math.max(1, A / B)) : 0.2 * Math.sqrt(Math.max(A, B));
}

/**
 * Muon for 2-D weight matrices [A, B] and stacked expert weights [E, A, B] (each expert's
 * matrix orthogonalised separately, all in one batched Newton–Schulz call):
 *
 * ```
 * M ← μ·M + G            (ema: μ·M + (1−μ)·G)
 * U = G + μ·M            (Nesterov; else U = M)
 * O = NS(U) · scale      (0.2·√max(A, B) or √max(1, A/B))
 * W ← W − lr·(O + wd·W)
 * ```
 *
 * Fused momentum kernels (which also gather U into its Newton–Schulz batch) and fused apply
 * kernels, several parameters per launch; per batch of same-shaped matrices (across
 * parameters and layers; optim/muon_batch.ts) one batched Newton–Schulz call. Use `MuonWithAdamW` to train a
 * whole model (embeddings, norms and the head go to AdamW).
 *
 * @example Muon on the matrices of a layer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const mlp = new mg.nn.MLP(64, 128, { seed: 0 }); // gate/up/down projections: 2-D weights only
 * const opt = new mg.optim.Muon(mlp, { lr: 0.02, momentum: 0.95 });
 * mg.scope(() => mlp.forward(mg.randn([4, 64], { seed: 1 })).square().mean().backward());
 * await opt.step(); // momentum, 5 batched Newton–Schulz steps, scaled apply, on the GPU
 * opt.zeroGrad();
 * // new mg.optim.Muon([mg.zeros([8])], { lr: 0.02 }) throws: 1-D parameters belong to AdamW
 * ```
 */
export class Muon extends Optimizer<MuonOptions> {
  /** `options` are the defaults of every group (lr required). */
  constructor(
    params: ParamsInput<MuonOptions>,
    options: Partial<MuonOptions> & Pick<MuonOptions, "lr"> & CommonOptions,
  ) {
    const { checkFinite, ...rest } = options;
    super(
      "Muon",
      params,
      {
        momentum: 0.95,
        nesterov: true,
        weightDecay: 0.1,
        scale: "match_rms_adamw",
        ema: false,
        nsSteps: 5,
        nsCoefficients: [3.4445, -4.775, 2.0315],
        nsEps: 1e-7,
        nsMethod: "standard",
        nsRestarts: [2],
        nsPadSlack: 0.25,
        nsMaxBatchBytes: 64 * 1024 * 1024,
        ...rest,
      },
      { checkFinite },
    );
  }

  /** Muon takes matrices [A, B] and stacks of matrices [E, A, B] only. */
  protected override validateParam(name: string, p: Tensor, options: MuonOptions): void {
    super.validateParam(name, p, options);
    if (p.rank !== 2 && p.rank !== 3) {
      throw new MoongradError(
        "Muon",
        `parameter "${name}" has shape ${fmtShape(p.shape)}; Muon takes 2-D matrices [A, B] or ` +
          "stacked expert matrices [E, A, B] (give 1-D gains, biases and embeddings to AdamW, " +
          "e.g. with splitParamsMoonlight / MuonWithAdamW)",
      );
    }
  }

  /** Checks momentum in [0, 1), weight decay, scale and the Newton–Schulz schedule. */
  protected override validateOptions(o: MuonOptions): void {
    super.validateOptions(o);
    if (!(o.momentum >= 0 && o.momentum < 1)) {
      throw new MoongradError("Muon", `momentum must be in [0, 1), got ${o.momentum}`);
    }
    if (!(Number.isFinite(o.weightDecay) && o.weightDecay >= 0)) {
      throw new MoongradError(
        "Muon",
        `weightDecay must be a finite number >= 0, got ${o.weightDecay}`,
      );
    }
    if (o.scale !== "match_rms_adamw" && o.scale !== "original") {
      throw new MoongradError(
        "Muon",
        `scale must be "match_rms_adamw" or "original", got ${o.scale}`,
      );
    }
    nsSchedule(nsOptions(o));
    if (o.nsMethod !== "standard" && o.nsMethod !== "gram") {
      throw new MoongradError("Muon", `nsMethod must be "standard" or "gram", got ${o.nsMethod}`);
    }
    if (!Array.isArray(o.nsRestarts) || !o.nsRestarts.every((r) => Number.isInteger(r) && r >= 1)) {
      throw new MoongradError(
        "Muon",
        `nsRestarts must list step counts >= 1, got ${JSON.stringify(o.nsRestarts)}`,
      );
    }
    if (!(Number.isFinite(o.nsPadSlack) && o.nsPadSlack >= 0)) {
      throw new MoongradError(
        "Muon",
        `nsPadSlack must be a finite number >= 0, got ${o.nsPadSlack}`,
      );
    }
    if (!(Number.isFinite(o.nsMaxBatchBytes) && o.nsMaxBatchBytes > 0)) {
      throw new MoongradError(
        "Muon",
        `nsMaxBatchBytes must be a finite number > 0, got ${o.nsMaxBatchBytes}`,
      );
    }
  }

  /**
   * The step, batched: per optimizer group, the matrices are planned into Newton–Schulz
   * batches (optim/muon_batch.ts); multi-tensor momentum launches (up to 6 parameters each)
   * write every U into its batch slots, one newtonSchulz call orthogonalises each batch, and
   * multi-tensor apply launches (up to 8 parameters each) read the slots back
   * (ops/muon_batch.ts). The arithmetic per element is that of the per-parameter kernels.
   */
  protected override updateAll(items: UpdateContext<MuonOptions>[]): void {
    const byOptions = new Map<MuonOptions, UpdateContext<MuonOptions>[]>();
    for (const c of items) {
      const list = byOptions.get(c.options);
      if (list) list.push(c);
      else byOptions.set(c.options, [c]);
    }
    for (const [o, list] of byOptions) {
      const moms = list.map((c) => this.slot(c.param, c.state, "momentum_buffer"));
      const plan = planNsGroups(list.map((c) => c.param.shape), {
        padSlack: o.nsPadSlack,
        maxBytes: o.nsMaxBatchBytes,
      });
      const gradScale = o.ema ? 1 - o.momentum : 1;
      const part = (t: Tensor, start: number, count: number) =>
        count === (t.rank === 3 ? t.shape[0] : 1) ? t : t.slice(0, start, start + count);
      for (const group of plan) {
        const batch = Tensor.empty([group.count, group.R, group.K], "f32");
        const views: Tensor[] = [];
        const view = (t: Tensor, start: number, count: number) => {
          const v = part(t, start, count);
          if (v !== t) views.push(v);
          return v;
        };
        try {
          muonGather(
            group.members.map(({ index, start, count, first }) => ({
              grad: view(list[index].grad, start, count),
              momentum: view(moms[index], start, count),
              first,
            })),
            batch,
            o.momentum,
            gradScale,
            o.nesterov,
          );
        } finally {
          views.forEach((v) => v.dispose());
          views.length = 0;
        }
        const orth = newtonSchulz(batch, nsOptions(o));
        batch.dispose();
        // Parameters of one optimizer group share lr (a schedule is per group).
        const lr = list[0].lr;
        try {
          muonScatterApply(
            group.members.map(({ index, start, count, first }) => {
              const p = view(list[index].param, start, count);
              const A = p.shape[p.rank - 2];
              const B = p.shape[p.rank - 1];
              return { param: p, first, step: lr * muonScale(o.scale, A, B) };
            }),
            orth,
            lr,
            o.weightDecay,
          );
        } finally {
          views.forEach((v) => v.dispose());
          orth.dispose();
        }
      }
    }
  }

  /** Momentum, Newton–Schulz, scaled apply with decoupled weight decay (one parameter). */
  protected update(ctx: UpdateContext<MuonOptions>): void {
    this.updateAll([ctx]);
  }
}

/** The Newton–Schulz options of a Muon group (a per-step coefficient list sets the steps). */
function nsOptions(o: MuonOptions): NewtonSchulzOptions {
  const perStep = Array.isArray(o.nsCoefficients[0]);
  return {
    steps: perStep ? undefined : o.nsSteps,
    coefficients: o.nsCoefficients,
    eps: o.nsEps,
    method: o.nsMethod,
    restarts: o.nsRestarts,
  };
}
