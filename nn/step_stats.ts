/**
 * Step statistics as values: what the training forwards of one optimizer step measured, kept
 * in an object the caller creates and passes to each training forward, instead of fields the
 * modules overwrite on every forward.
 *
 * - Attention (MLA) records its f32 [H] per-head max pre-softmax logits as a running
 *   elementwise maximum over every forward of the step (on the GPU, no readback): with k
 *   micro-batches, QK-Clip sees the max over all of them, as torchtitan's Kimi QK-Clip reduces
 *   over micro-batches and ranks.
 * - MoE records its i32 [E] expert loads summed over the step's forwards, the routed pair
 *   count (tokens · K) summed likewise, and the sequence-wise auxiliary loss value (detached,
 *   summed over the forwards).
 *
 * Forwards without stats (evaluation, sampling) or in eval mode record nothing, so an
 * evaluation between `backward()` and `step(stats)` cannot change what QK-Clip clips. Entries
 * are keyed by module object. `reset()` empties it for the next step; `dispose()` frees it.
 * @example
 * ```ts
 * const stats = new mg.nn.StepStats();
 * for (const mb of microBatches) mg.scope(() => model.loss(mb, { labels: mb }, { stats }).backward());
 * await opt.step(stats); // QK-Clip with the max logits of every micro-batch
 * model.updateRouterBias(stats, 1e-3);
 * const { maxLogits, loads } = await stats.read(model);
 * stats.dispose();
 * ```
 */
import "../ops/tensor_methods.ts"; // installs the Tensor methods this module calls
import { noGrad } from "../core/autograd.ts";
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { add, maximum } from "../ops/elementwise.ts";
import { alias } from "../ops/layout.ts";

/**
 * The MoE statistics of one module over a step.
 *
 * @example Read one MoE layer's loads after a step
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * function load(stats: mg.nn.StepStats, moe: mg.nn.DeepseekMoE): mg.Tensor | null {
 *   const rec: mg.nn.MoeStepStats | null = stats.moe(moe);
 *   return rec ? rec.load : null; // i32 [E], owned by the stats
 * }
 * ```
 */
export interface MoeStepStats {
  /** i32 [E]: token·slot pairs routed to each expert, summed over the step's forwards. */
  readonly load: Tensor;
  /** Pairs routed (tokens · K), summed over the step's forwards (= the sum of `load`). */
  readonly pairs: number;
  /** f32 scalar: the detached auxiliary loss summed over the forwards, or null (α = 0). */
  readonly auxLoss: Tensor | null;
  /** Forwards recorded. */
  readonly forwards: number;
}

/**
 * Host copies of a step's statistics in layer order (see `StepStats.read`).
 *
 * @example Log the step's statistics
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * async function log(stats: mg.nn.StepStats, lm: mg.nn.KimiLM): Promise<void> {
 *   const v: mg.nn.StepStatsValues = await stats.read(lm);
 *   console.log(v.maxLogits.map((l) => Math.max(...l)), v.pairs);
 * }
 * ```
 */
export interface StepStatsValues {
  /** Per attention layer, the per-head max logits of the step (empty array if none recorded). */
  maxLogits: Float32Array[];
  /** Per MoE layer, the expert loads summed over the step (empty array if none recorded). */
  loads: Int32Array[];
  /** Per MoE layer, the routed pairs summed over the step. */
  pairs: number[];
  /** Per MoE layer, the auxiliary loss summed over the step's forwards (0 when none). */
  auxLoss: number[];
}

/**
 * What `StepStats.read` needs of a model: its layers in order.
 *
 * @example Any model that lists its layers
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const layers: mg.nn.StatsLayers = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"));
 * console.log(layers.attentionLayers().length, layers.moeLayers().length); // 4 3
 * ```
 */
export interface StatsLayers {
  /** The attention modules, in layer order (keys of their max logits). */
  attentionLayers(): readonly object[];
  /** The MoE modules, in layer order (keys of their loads). */
  moeLayers(): readonly object[];
}

/**
 * Options of `StepStats`.
 *
 * @example Keep the expert selections for inspection
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const stats = new mg.nn.StepStats({ indices: true } satisfies mg.nn.StepStatsOptions);
 * ```
 */
export interface StepStatsOptions {
  /** Also keep each MoE forward's i32 [N, K] expert selection (for tests/inspection). */
  indices?: boolean;
}

interface MoeEntry {
  load: Tensor;
  pairs: number;
  auxLoss: Tensor | null;
  forwards: number;
}

const keepAlias = (t: Tensor): Tensor => noGrad(() => alias(t)).keep();

/**
 * The statistics of one optimizer step's training forwards (see the module doc).
 *
 * @example One step with two micro-batches
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const lm = new mg.nn.KimiLM(config, { seed: 0 });
 * const opt = new mg.optim.MuonClip(lm, { lr: 2e-3 });
 * const stats = new mg.nn.StepStats();
 * for (const batch of [[[1, 5, 9, 2, 7]], [[3, 8, 4, 6, 2]]]) {
 *   mg.scope(() => lm.loss(batch, { labels: batch }, { stats }).backward());
 * }
 * await opt.step(stats); // QK-Clip with the max logits of both micro-batches
 * lm.updateRouterBias(stats, 1e-3);
 * const { maxLogits, loads } = await stats.read(lm);
 * stats.dispose();
 * ```
 */
export class StepStats {
  #maxLogits = new Map<object, Tensor>();
  #moe = new Map<object, MoeEntry>();
  #forwards = new Map<object, number>();
  #indices = new Map<object, Tensor[]>();
  #disposed = false;
  /** Whether MoE selections are kept (`StepStatsOptions.indices`). */
  readonly keepsIndices: boolean;

  /** An empty record; pass it to the step's training forwards. */
  constructor(options: StepStatsOptions = {}) {
    this.keepsIndices = options.indices ?? false;
  }

  /** True when no forward has recorded anything since creation or `reset()`. */
  get isEmpty(): boolean {
    return this.#maxLogits.size === 0 && this.#moe.size === 0;
  }

  /** Records f32 [H] max logits of one forward of `module` (running elementwise max). */
  recordMaxLogits(module: object, maxLogits: Tensor): void {
    this.#check("StepStats.recordMaxLogits");
    const prev = this.#maxLogits.get(module);
    if (!prev) {
      this.#maxLogits.set(module, keepAlias(maxLogits));
    } else {
      if (prev.shape.join() !== maxLogits.shape.join()) {
        throw new MoongradError(
          "StepStats.recordMaxLogits",
          `max logits of shape [${maxLogits.shape}] do not match the recorded [${prev.shape}]`,
        );
      }
      this.#maxLogits.set(module, noGrad(() => maximum(prev, maxLogits)).keep());
      prev.dispose();
    }
    this.#forwards.set(module, (this.#forwards.get(module) ?? 0) + 1);
  }

  /** Records one MoE forward of `module`: i32 [E] loads, pairs routed, detached aux loss. */
  recordMoe(
    module: object,
    load: Tensor,
    pairs: number,
    auxLoss: Tensor | null,
    indices?: Tensor,
  ): void {
    this.#check("StepStats.recordMoe");
    if (this.keepsIndices && indices) {
      const list = this.#indices.get(module) ?? [];
      list.push(keepAlias(indices));
      this.#indices.set(module, list);
    }
    const prev = this.#moe.get(module);
    if (!prev) {
      this.#moe.set(module, {
        load: keepAlias(load),
        pairs,
        auxLoss: auxLoss ? keepAlias(auxLoss) : null,
        forwards: 1,
      });
      return;
    }
    const load2 = noGrad(() => add(prev.load, load)).keep();
    prev.load.dispose();
    prev.load = load2;
    prev.pairs += pairs;
    if (auxLoss) {
      const a2 = prev.auxLoss
        ? noGrad(() => add(prev.auxLoss!, auxLoss)).keep()
        : keepAlias(auxLoss);
      prev.auxLoss?.dispose();
      prev.auxLoss = a2;
    }
    prev.forwards++;
  }

  /** f32 [H]: the max logits of `module` over the step's forwards, or null. Owned by the stats. */
  maxLogits(module: object): Tensor | null {
    return this.#maxLogits.get(module) ?? null;
  }

  /** The MoE statistics of `module` over the step, or null. Tensors owned by the stats. */
  moe(module: object): MoeStepStats | null {
    const e = this.#moe.get(module);
    return e ? { ...e } : null;
  }

  /** The i32 [N, K] selections of `module`'s forwards, in order (only with `indices: true`). */
  indices(module: object): readonly Tensor[] {
    return this.#indices.get(module) ?? [];
  }

  /** Forwards of `module` recorded this step (attention modules). */
  forwards(module: object): number {
    return this.#forwards.get(module) ?? this.#moe.get(module)?.forwards ?? 0;
  }

  /** Reads every statistic of `model`'s layers back in one batch of readbacks. */
  async read(model: StatsLayers): Promise<StepStatsValues> {
    this.#check("StepStats.read");
    const attn = model.attentionLayers();
    const moes = model.moeLayers().map((m) => this.#moe.get(m) ?? null);
    const [logits, loads, aux] = await Promise.all([
      Promise.all(attn.map((a) => this.#maxLogits.get(a)?.data() ?? new Float32Array(0))),
      Promise.all(moes.map((e) => e?.load.data() ?? new Int32Array(0))),
      Promise.all(moes.map((e) => e?.auxLoss?.item() ?? 0)),
    ]);
    return {
      maxLogits: logits.map((l) => l as Float32Array),
      loads: loads.map((l) => l as Int32Array),
      pairs: moes.map((e) => e?.pairs ?? 0),
      auxLoss: aux,
    };
  }

  /** Frees everything recorded; the object is ready for the next step. */
  reset(): void {
    for (const t of this.#maxLogits.values()) t.dispose();
    for (const e of this.#moe.values()) {
      e.load.dispose();
      e.auxLoss?.dispose();
    }
    for (const l of this.#indices.values()) for (const t of l) t.dispose();
    this.#indices.clear();
    this.#maxLogits.clear();
    this.#moe.clear();
    this.#forwards.clear();
  }

  /** Frees everything; the object cannot record again. */
  dispose(): void {
    this.reset();
    this.#disposed = true;
  }

  /** Whether `dispose()` ran. */
  get isDisposed(): boolean {
    return this.#disposed;
  }

  #check(op: string): void {
    if (this.#disposed) throw new MoongradError(op, "these StepStats were disposed");
  }
}

/**
 * Options of a training forward.
 *
 * @example Record statistics of a training forward
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const stats = new mg.nn.StepStats();
 * const opts: mg.nn.ForwardOptions = { stats }; // lm.loss(ids, targets, opts)
 * ```
 */
export interface ForwardOptions {
  /** Where the forward records its statistics (nothing recorded without it). */
  stats?: StepStats;
}

/**
 * Internal per-call context threaded through a model forward: the caller's stats and, inside
 * `KimiLM.loss`, the list that collects the differentiable MoE auxiliary losses.
 *
 * @example Thread a context through a layer's forward
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const moe = new mg.nn.DeepseekMoE({ ...config, aux_loss_alpha: 0.001 }, { seed: 0 });
 * const ctx: mg.nn.ForwardContext = { stats: new mg.nn.StepStats(), auxLosses: [] };
 * const y = moe.forward(mg.randn([1, 8, config.hidden_size], { seed: 1 }), ctx);
 * console.log(ctx.auxLosses!.length); // 1: the differentiable auxiliary loss to add
 * ```
 */
export interface ForwardContext {
  /** Where training forwards record their statistics (nothing recorded without it). */
  stats?: StepStats;
  /** Collects each MoE layer's differentiable auxiliary loss (when aux_loss_alpha > 0). */
  auxLosses?: Tensor[];
}

/** Checks a `stats` option (a StepStats or absent). */
export function checkStats(op: string, stats: unknown): StepStats | undefined {
  if (stats === undefined || stats === null) return undefined;
  if (!(stats instanceof StepStats)) {
    throw new MoongradError(op, `stats must be a StepStats (mg.nn.StepStats), got ${typeof stats}`);
  }
  if (stats.isDisposed) throw new MoongradError(op, "these StepStats were disposed");
  return stats;
}
