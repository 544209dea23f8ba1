/**
 * Learning-rate schedules: functions of the step index (0 for the first update) that an
 * optimizer evaluates at every `step()` when a group's `lr` is a function.
 */
import { MoongradError } from "../core/errors.ts";

/**
 * A learning rate as a function of the 0-based index of the update being applied.
 *
 * @example A hand-written schedule
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const stepDecay: mg.optim.LrSchedule = (step) => 1e-3 * 0.5 ** Math.floor(step / 1000);
 * console.log(stepDecay(0), stepDecay(2500)); // 0.001 0.00025
 * ```
 */
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

/**
 * Options of `linearWarmup`.
 *
 * @example Warm up over 100 updates
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.WarmupOptions = { peak: 3e-4, warmupSteps: 100 };
 * ```
 */
export interface WarmupOptions {
  /** The learning rate reached at the end of warm-up. */
  peak: number;
  /** Steps of linear warm-up: update t (0-based) uses peak·(t+1)/warmupSteps. */
  warmupSteps: number;
}

/**
 * Linear warm-up to `peak` over `warmupSteps` updates, then constant.
 *
 * @example Warm-up, then constant
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const lr = mg.optim.linearWarmup({ peak: 1e-3, warmupSteps: 4 });
 * console.log(lr(0), lr(1), lr(3), lr(100)); // 0.00025 0.0005 0.001 0.001
 * ```
 */
export function linearWarmup(options: WarmupOptions): LrSchedule {
  checkCommon("linearWarmup", options.peak, options.warmupSteps);
  const { peak, warmupSteps } = options;
  return (step) => warm(peak, warmupSteps, step);
}

/**
 * Options of `cosineSchedule`.
 *
 * @example Cosine decay to a floor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.CosineOptions = { peak: 1e-3, warmupSteps: 10, totalSteps: 1000, minLr: 1e-5 };
 * ```
 */
export interface CosineOptions extends WarmupOptions {
  /** Total updates; the cosine reaches `minLr` at step totalSteps and stays there. */
  totalSteps: number;
  /** Floor of the decay (default 0). */
  minLr?: number;
}

/**
 * Linear warm-up, then cosine decay from `peak` to `minLr`:
 * lr = min + (peak − min)·½(1 + cos(π·(t − warmup)/(total − warmup))).
 *
 * @example Warm-up, then cosine decay
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const lr = mg.optim.cosineSchedule({ peak: 1e-3, warmupSteps: 10, totalSteps: 110 });
 * console.log(lr(9), lr(60), lr(110)); // 0.001 0.0005 0
 * // totalSteps <= warmupSteps throws a MoongradError
 * ```
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

/**
 * Options of `wsdSchedule`.
 *
 * @example Kimi K2's shape: 2e-4 decayed to 2e-5
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.WsdOptions = {
 *   peak: 2e-4,
 *   warmupSteps: 500,
 *   stableSteps: 10_000,
 *   decaySteps: 2_000,
 *   minLr: 2e-5,
 *   decay: "cosine",
 * };
 * ```
 */
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
 *
 * @example Warm-up, stable, decay
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const lr = mg.optim.wsdSchedule({ peak: 1e-3, warmupSteps: 2, stableSteps: 3, decaySteps: 2, decay: "linear" });
 * console.log([0, 1, 2, 4, 5, 6, 7].map(lr)); // [0.0005, 0.001, 0.001, 0.001, 0.001, 0.0005, 0]
 * const opt = new mg.optim.AdamW([mg.zeros([4], { requiresGrad: true })], { lr }); // evaluated each step
 * ```
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
