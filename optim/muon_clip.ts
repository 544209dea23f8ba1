/**
 * MuonClip (Kimi K2 §2.1): Muon for the hidden matrices and AdamW for the rest, followed by
 * QK-Clip of every attention layer using the max logits its forward recorded in this step.
 */
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { KimiConfig } from "../nn/config.ts";
import type { Module } from "../nn/module.ts";
import type { AdamWOptions } from "./adamw.ts";
import type { LearningRate } from "./optimizer.ts";
import type { MuonOptions } from "./muon.ts";
import { MuonWithAdamW, type MuonWithAdamWStateDict } from "./split.ts";
import { qkClipMla } from "./qk_clip.ts";
import { alias } from "../ops/layout.ts";
import { noGrad } from "../core/autograd.ts";
import { StepStats } from "../nn/step_stats.ts";

/**
 * What MuonClip needs of a model: its config and attention layers.
 *
 * @example KimiLM is a ClippableModel
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm: mg.optim.ClippableModel = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"), { seed: 0 });
 * console.log(lm.attentionLayers().length); // 4 (one per decoder layer)
 * ```
 */
export interface ClippableModel extends Module {
  /** HF-keyed configuration (head sizes). */
  readonly config: KimiConfig;
  /** Attention modules in layer order (the keys of their max logits in a `StepStats`). */
  attentionLayers(): readonly Module[];
}

/**
 * Options of `MuonClip`.
 *
 * @example K2-style options
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.MuonClipOptions = {
 *   lr: 2e-4,
 *   weightDecay: 0.1,
 *   tau: 100,
 *   muon: { momentum: 0.95 },
 *   adamw: { betas: [0.9, 0.95] },
 * };
 * ```
 */
export interface MuonClipOptions {
  /** Learning rate of both halves (Moonlight's matched-RMS scaling lets them share it). */
  lr: LearningRate;
  /** AdamW's learning rate when it should differ (default: `lr`). */
  adamwLr?: LearningRate;
  /** Decoupled weight decay of both halves (default 0.1). */
  weightDecay?: number;
  /** QK-Clip threshold τ on the max pre-softmax logit (default 100, as in K2). */
  tau?: number;
  /**
   * QK-Clip's q/k split exponent α ∈ [0, 1]: q_nope rows ×γ^α, k_nope rows ×γ^(1−α), rotary
   * query rows ×γ (default 0.5, K2's rule).
   */
  qkClipAlpha?: number;
  /** Further Muon options (momentum, nesterov, scale, NS schedule). */
  muon?: Partial<Omit<MuonOptions, "lr">>;
  /** Further AdamW options (betas, eps). */
  adamw?: Partial<Omit<AdamWOptions, "lr">>;
  /** Check gradients for NaN/Inf before updating (reads back; default false). */
  checkFinite?: boolean;
}

/**
 * One clipped head of the last step.
 *
 * @example List the heads QK-Clip scaled
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * async function report(opt: mg.optim.MuonClip): Promise<void> {
 *   const heads: mg.optim.ClippedHead[] = await opt.clippedHeads();
 *   for (const h of heads) console.log(`layer ${h.layer} head ${h.head}: ${h.maxLogit} → ×${h.gamma}`);
 * }
 * ```
 */
export interface ClippedHead {
  /** Layer index. */
  layer: number;
  /** Head index. */
  head: number;
  /** Its max logit in the step's forward. */
  maxLogit: number;
  /** The factor its logits were scaled by, τ / maxLogit. */
  gamma: number;
}

/**
 * Muon + AdamW + QK-Clip as one optimizer (`step`, `zeroGrad`, `stateDict`, `loadStateDict`).
 *
 * @example One MuonClip step over two micro-batches
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const lm = new mg.nn.KimiLM(config, { seed: 0 });
 * const opt = new mg.optim.MuonClip(lm, { lr: 2e-3, tau: 100 });
 * const stats = new mg.nn.StepStats();
 * for (let i = 0; i < 2; i++) {
 *   const batch = [[1 + i, 5, 9, 2, 7, 3, 8, 4]]; // one micro-batch of token ids
 *   mg.scope(() => lm.loss(batch, { labels: batch }, { stats }).backward());
 * }
 * await opt.step(stats); // Muon + AdamW, then QK-Clip of heads whose max logit exceeded τ
 * console.log(await opt.clippedHeads()); // [] while every max logit stays below 100
 * opt.zeroGrad();
 * stats.dispose();
 * ```
 */
export class MuonClip {
  /** The Muon/AdamW pair doing the update. */
  readonly inner: MuonWithAdamW;
  /** The threshold τ. */
  readonly tau: number;
  /** QK-Clip's q/k split exponent α. */
  readonly qkClipAlpha: number;
  readonly #model: ClippableModel;
  #gammas: Tensor[] = [];
  #maxLogits: Tensor[] = [];

  /** Splits the model's parameters the Moonlight way and prepares QK-Clip for its layers. */
  constructor(model: ClippableModel, options: MuonClipOptions) {
    const tau = options.tau ?? 100;
    if (!(tau > 0)) throw new MoongradError("MuonClip", `tau must be > 0, got ${tau}`);
    if (typeof model?.attentionLayers !== "function" || !model.config) {
      throw new MoongradError(
        "MuonClip",
        "the model must expose config and attentionLayers() (e.g. nn.KimiLM)",
      );
    }
    const alpha = options.qkClipAlpha ?? 0.5;
    if (!(alpha >= 0 && alpha <= 1)) {
      throw new MoongradError("MuonClip", `qkClipAlpha must be in [0, 1], got ${alpha}`);
    }
    this.tau = tau;
    this.qkClipAlpha = alpha;
    this.#model = model;
    const weightDecay = options.weightDecay ?? 0.1;
    this.inner = new MuonWithAdamW(model, {
      checkFinite: options.checkFinite,
      muon: { weightDecay, ...options.muon, lr: options.lr },
      adamw: { weightDecay, ...options.adamw, lr: options.adamwLr ?? options.lr },
    });
  }

  /**
   * Updates every parameter, then clips each attention layer whose heads' max logits over the
   * step's training forwards (recorded in `stats`: every micro-batch passed
   * `model.loss(ids, targets, { stats })`) exceeded τ. Forwards without the stats (evaluation,
   * sampling) do not count. Does not reset `stats`.
   */
  async step(stats: StepStats): Promise<void> {
    const op = "MuonClip.step";
    if (!(stats instanceof StepStats)) {
      throw new MoongradError(
        op,
        "needs the step's StepStats: create one per step, pass it to every training forward " +
          "(model.loss(ids, targets, { stats })) and then to opt.step(stats)",
      );
    }
    if (stats.isDisposed) throw new MoongradError(op, "these StepStats were disposed");
    const layers = this.#model.attentionLayers();
    const found = layers.map((l, i) => {
      const m = stats.maxLogits(l);
      if (!m) {
        throw new MoongradError(
          op,
          `attention layer ${i} has no max logits in these StepStats: no training forward of ` +
            `this step recorded into them (pass { stats } to model.loss / model.forward in ` +
            `training mode before step(stats))`,
        );
      }
      return m;
    });
    const logits = found.map((m) => noGrad(() => alias(m)).keep());
    await this.inner.step();
    this.#release();
    this.#maxLogits = logits;
    this.#gammas = layers.map((l, i) =>
      qkClipMla(l, this.#model.config, logits[i], this.tau, { alpha: this.qkClipAlpha })
    );
  }

  /** Per layer, the clip factors γ (f32 [H], 1 for untouched heads) of the last step. */
  get lastGammas(): readonly Tensor[] {
    return this.#gammas;
  }

  /** Reads back the heads clipped by the last step (one round trip). */
  async clippedHeads(): Promise<ClippedHead[]> {
    const out: ClippedHead[] = [];
    const [gammas, logits] = await Promise.all([
      Promise.all(this.#gammas.map((g) => g.data())),
      Promise.all(this.#maxLogits.map((m) => m.data())),
    ]);
    gammas.forEach((g, layer) =>
      g.forEach((gamma, head) => {
        if (gamma < 1) out.push({ layer, head, gamma, maxLogit: logits[layer][head] });
      })
    );
    return out;
  }

  /**
   * Reads back, per layer and head, the max logit of the last step and its clip factor γ
   * (1 for heads at or under τ): the per-head record the trainer logs (one round trip).
   */
  async headStats(): Promise<{ maxLogits: number[][]; gammas: number[][] }> {
    const [gammas, logits] = await Promise.all([
      Promise.all(this.#gammas.map((g) => g.data())),
      Promise.all(this.#maxLogits.map((m) => m.data())),
    ]);
    return {
      maxLogits: logits.map((l) => Array.from(l)),
      gammas: gammas.map((g) => Array.from(g)),
    };
  }

  /** Frees every gradient. */
  zeroGrad(): void {
    this.inner.zeroGrad();
  }

  /** Snapshot of both halves' state (copies the caller disposes). τ is a constructor option. */
  stateDict(): MuonWithAdamWStateDict {
    return this.inner.stateDict();
  }

  /** Restores a snapshot taken by `stateDict()`. */
  loadStateDict(sd: MuonWithAdamWStateDict): void {
    this.inner.loadStateDict(sd);
  }

  #release(): void {
    for (const t of [...this.#gammas, ...this.#maxLogits]) t.dispose();
    this.#gammas = [];
    this.#maxLogits = [];
  }

  /** Frees the optimizer state and the last step's clip records. */
  dispose(): void {
    this.#release();
    this.inner.dispose();
  }
}
