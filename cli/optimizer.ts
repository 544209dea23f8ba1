/**
 * The trainer's optimizer: MuonClip, Muon + AdamW, or AdamW alone, with the chosen schedule,
 * behind one interface whose state is a set of named `OptimizerStateDict` halves.
 */
import type { KimiLM } from "../nn/model.ts";
import type { StepStats } from "../nn/step_stats.ts";
import {
  AdamW,
  cosineSchedule,
  linearWarmup,
  type LrSchedule,
  MuonClip,
  MuonWithAdamW,
  type OptimizerStateDict,
  polarExpressCoefficients,
  wsdSchedule,
} from "../optim/mod.ts";
import type { RunSettings } from "./options.ts";

/** What the training loop needs of an optimizer. */
export interface TrainOptimizer {
  /** Updates the parameters (and clips attention with MuonClip, from the step's `stats`). */
  step(stats: StepStats): Promise<void>;
  /** Frees every gradient. */
  zeroGrad(): void;
  /** State halves by name ("muon", "adamw"); tensors are copies the caller disposes. */
  stateDict(): Record<string, OptimizerStateDict>;
  /** Restores the halves written by `stateDict`. */
  loadStateDict(sd: Record<string, OptimizerStateDict>): void;
  /** Learning rates used by the update with 0-based index `step`. */
  lrAt(step: number): { muon?: number; adamw: number };
  /**
   * MuonClip only: per layer and head, the last step's max logit and clip factor γ (1 where
   * untouched); undefined for optimizers without QK-Clip.
   */
  headStats?(): Promise<{ maxLogits: number[][]; gammas: number[][] }>;
  /** Frees the state. */
  dispose(): void;
}

/** The schedule of a peak learning rate under the run's settings. */
export function makeSchedule(peak: number, s: RunSettings): LrSchedule {
  const warmupSteps = Math.min(s.warmup, s.steps - 1);
  if (s.schedule === "constant") return linearWarmup({ peak, warmupSteps });
  if (s.schedule === "wsd") {
    const decaySteps = Math.max(1, Math.round(0.2 * s.steps));
    const stableSteps = Math.max(0, s.steps - warmupSteps - decaySteps);
    return wsdSchedule({ peak, warmupSteps, stableSteps, decaySteps, minLr: peak * 0.1 });
  }
  return cosineSchedule({ peak, warmupSteps, totalSteps: s.steps, minLr: peak * 0.1 });
}

/** Builds the optimizer the settings name for `model`. */
export function makeOptimizer(model: KimiLM, s: RunSettings): TrainOptimizer {
  const muonLr = makeSchedule(s.lr, s);
  const adamwLr = makeSchedule(s.adamwLr, s);
  const wd = s.weightDecay;
  if (s.optimizer === "adamw") {
    const opt = new AdamW(model, { lr: adamwLr, weightDecay: wd });
    return {
      step: () => opt.step(),
      zeroGrad: () => opt.zeroGrad(),
      stateDict: () => ({ adamw: opt.stateDict() }),
      loadStateDict: (sd) => opt.loadStateDict(sd.adamw),
      lrAt: (t) => ({ adamw: adamwLr(t) }),
      dispose: () => opt.dispose(),
    };
  }
  // Older runs stored no Newton–Schulz settings: the defaults (quintic, standard).
  const muon = {
    nsCoefficients: s.nsCoefficients === "polar-express"
      ? polarExpressCoefficients({ steps: 5 })
      : undefined,
    nsMethod: s.nsMethod ?? "standard",
  };
  if (muon.nsCoefficients === undefined) delete muon.nsCoefficients;
  const inner = s.optimizer === "muonclip"
    ? new MuonClip(model, {
      lr: muonLr,
      adamwLr,
      weightDecay: wd,
      tau: s.tau,
      qkClipAlpha: s.qkClipAlpha ?? 0.5,
      muon,
    })
    : new MuonWithAdamW(model, {
      muon: { lr: muonLr, weightDecay: wd, ...muon },
      adamw: { lr: adamwLr, weightDecay: wd },
    });
  return {
    step: (stats) => inner instanceof MuonClip ? inner.step(stats) : inner.step(),
    zeroGrad: () => inner.zeroGrad(),
    stateDict: () => {
      const sd = inner.stateDict();
      return { muon: sd.muon, adamw: sd.adamw };
    },
    loadStateDict: (sd) => inner.loadStateDict({ muon: sd.muon, adamw: sd.adamw }),
    lrAt: (t) => ({ muon: muonLr(t), adamw: adamwLr(t) }),
    headStats: inner instanceof MuonClip ? () => inner.headStats() : undefined,
    dispose: () => inner.dispose(),
  };
}
