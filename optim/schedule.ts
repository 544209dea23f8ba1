/**
 * Learning-rate schedules: functions of the step index (0 for the first update) that an
 * optimizer evaluates at every `step()` when a group's `lr` is a function.
 */
import { MoongradError } from "../core/errors.ts";

/** A learning rate as a function of the 0-based index of the update being applied. */
export type LrSchedule = (step: number) => number;

function need(op: string, ok: boolean, what: string): void {
  if (!ok) throw new MoongradError(op, what);
}

function checkCommon(op: string, peak: number, warmupSteps: number): void {
  need(op, Number.isFinite(peak) && peak >= 0, `peak must be a finite number >= 0, got ${peak}`);
  need(
    op,
    Number.isInteger(warmupSteps) && warmupSteps >= 0,
    `warmupSteps must be an integer >= 0, got ${warmupSteps}`,
  );
}

/** Linear warm-up value at `step`: peak·(step+1)/warmupSteps during warm-up, else peak. */
function warm(peak: number, warmupSteps: number, step: number): number {
  return step < warmupSteps ? (peak * (step + 1)) / warmupSteps : peak;
}

/** Options of `linearWarmup`. */
export interface WarmupOptions {
  /** The learning rate reached at the end of warm-up. */
  peak: number;
  /** Steps of linear warm-up: update t (0-based) uses peak·(t+1)/warmupSteps. */
  warmupSteps: number;
}

/** Linear warm-up to `peak` over `warmupSteps` updates, then constant. */
export function linearWarmup(options: WarmupOptions): LrSchedule {
  checkCommon("linearWarmup", options.peak, options.warmupSteps);
  const { peak, warmupSteps } = options;
  return (step) => warm(peak, warmupSteps, step);
}

/** Options of `cosineSchedule`. */
export interface CosineOptions extends WarmupOptions {
  /** Total updates; the cosine reaches `minLr` at step totalSteps and stays there. */
  totalSteps: number;
  /** Floor of the decay (default 0). */
  minLr?: number;
}

/**
 * Linear warm-up, then cosine decay from `peak` to `minLr`:
 * lr = min + (peak − min)·½(1 + cos(π·(t − warmup)/(total − warmup))).
 */
export function cosineSchedule(options: CosineOptions): LrSchedule {
  const op = "cosineSchedule";
  checkCommon(op, options.peak, options.warmupSteps);
  const { peak, warmupSteps, totalSteps } = options;
  const minLr = options.minLr ?? 0;
  need(
    op,
    Number.isInteger(totalSteps) && totalSteps > warmupSteps,
    `totalSteps must be an integer > warmupSteps (${warmupSteps}), got ${totalSteps}`,
  );
  need(op, minLr >= 0 && minLr <= peak, `minLr must be in [0, peak], got ${minLr}`);
  return (step) => {
    if (step < warmupSteps) return warm(peak, warmupSteps, step);
    const t = Math.min(1, (step - warmupSteps) / (totalSteps - warmupSteps));
    return minLr + (peak - minLr) * 0.5 * (1 + Math.cos(Math.PI * t));
  };
}

/** Options of `wsdSchedule`. */
export interface WsdOptions extends WarmupOptions {
  /** Updates at `peak` after warm-up. */
  stableSteps: number;
  /** Updates of the final decay from `peak` to `minLr`. */
  decaySteps: number;
  /** Floor reached at the end of the decay and kept after (default 0). */
  minLr?: number;
  /** Shape of the decay (default "cosine", as Kimi K2's 2e-4 → 2e-5). */
  decay?: "cosine" | "linear";
}

/**
 * Warm-up–stable–decay (Kimi K2): linear warm-up, a constant phase at `peak`, then a cosine
 * (or linear) decay to `minLr` over `decaySteps`, constant after.
 */
export function wsdSchedule(options: WsdOptions): LrSchedule {
  const op = "wsdSchedule";
  checkCommon(op, options.peak, options.warmupSteps);
  const { peak, warmupSteps, stableSteps, decaySteps } = options;
  const minLr = options.minLr ?? 0;
  const decay = options.decay ?? "cosine";
  need(
    op,
    Number.isInteger(stableSteps) && stableSteps >= 0,
    `stableSteps must be an integer >= 0, got ${stableSteps}`,
  );
  need(
    op,
    Number.isInteger(decaySteps) && decaySteps >= 1,
    `decaySteps must be an integer >= 1, got ${decaySteps}`,
  );
  need(op, minLr >= 0 && minLr <= peak, `minLr must be in [0, peak], got ${minLr}`);
  need(
    op,
    decay === "cosine" || decay === "linear",
    `decay must be "cosine" or "linear", got ${decay}`,
  );
  const decayStart = warmupSteps + stableSteps;
  return (step) => {
    if (step < warmupSteps) return warm(peak, warmupSteps, step);
    if (step < decayStart) return peak;
    const t = Math.min(1, (step - decayStart + 1) / decaySteps);
    const f = decay === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * t)) : 1 - t;
    return minLr + (peak - minLr) * f;
  };
}
