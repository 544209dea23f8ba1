/**
 * DeepSeekMoE block (HF `DeepseekV3MoE`): sigmoid router with the aux-loss-free correction
 * bias, top-k routed SwiGLU experts dispatched on the GPU (ops/moe.ts), and shared experts.
 *
 * Expert weights are stored stacked, one parameter per projection for all experts:
 * `experts.gate_proj` / `experts.up_proj` [E, I, D] and `experts.down_proj` [E, D, I], so one
 * grouped matmul serves every expert and Muon orthogonalises each expert's matrix in one
 * batched call. `namedParameters()` gives those stacked tensors (what optimizers update).
 * `stateDict()` (and so `loadStateDict`, `io.saveSafetensors`, `io.loadInto`) uses HF's
 * per-expert names `experts.{e}.{gate,up,down}_proj.weight` [I, D] / [D, I]: each is a view of
 * slice e of the stacked tensor (no copy), so saving reads it in place and loading writes
 * into it (`ownStateEntries`), so every parent module's state dict has the HF names too.
 */
import { checkAllocation } from "../core/limits.ts";
import { noGrad } from "../core/autograd.ts";
import { scope } from "../core/scope.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { div, mul, sigmoid } from "../ops/elementwise.ts";
import { swiglu } from "../ops/swiglu.ts";
import { reshape, transpose } from "../ops/layout.ts";
import { matmul } from "../ops/matmul.ts";
import {
  groupedMatmul,
  moeBiasUpdate,
  moeCombine,
  moeDispatch,
  moePlan,
  moeRoute,
  moeSequenceFraction,
} from "../ops/moe.ts";
import { mean, sum } from "../ops/reduce.ts";
import { zeros } from "../ops/creation.ts";
import type { KimiConfig } from "./config.ts";
import { MLP } from "./mlp.ts";
import { deriveSeed, Module, normalInit } from "./module.ts";
import { checkStats, type ForwardContext, type StepStats } from "./step_stats.ts";

/**
 * The router of a MoE layer (HF name "gate"): `weight` [E, D] and the buffer `e_score_correction_bias` [E].
 *
 * @example Router scores
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const gate = new mg.nn.MoEGate(8, 16, { seed: 0 });
 * const s = gate.scores(mg.randn([5, 16], { seed: 1 })); // sigmoid(x · weightᵀ)
 * console.log(s.shape, [...gate.stateDict().keys()]); // [5, 8] ["weight", "e_score_correction_bias"]
 * ```
 */
export class MoEGate extends Module {
  /** Router weight [E, D] (a parameter, f32). */
  readonly weight: Tensor;
  /** Selection-only bias [E] (a buffer: no gradient; changed by `DeepseekMoE.updateBias`). */
  readonly eScoreCorrectionBias: Tensor;

  /** Creates the router: weight N(0, std²), bias zero. */
  constructor(
    numExperts: number,
    hiddenSize: number,
    options: { std?: number; seed?: number } = {},
  ) {
    super();
    try {
      this.weight = this.param("weight", normalInit([numExperts, hiddenSize], options));
      this.eScoreCorrectionBias = this.buffer("e_score_correction_bias", zeros([numExperts]));
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** Router scores s = sigmoid(x · weightᵀ), f32 [N, E], for x f32 [N, D]. */
  scores(x: Tensor): Tensor {
    return scope(() => sigmoid(this.logits(x)));
  }

  /**
   * Router logits x · weightᵀ, f32 [N, E], for x f32 [N, D]: what `DeepseekMoE` hands to
   * `moeRoute` with `logits: true` (the sigmoid happens inside the routing kernel).
   */
  logits(x: Tensor): Tensor {
    return matmul(x, transpose(this.weight, 0, 1));
  }
}

const PROJ = ["gate_proj", "up_proj", "down_proj"] as const;

/**
 * The routed experts, stacked: parameters `gate_proj`, `up_proj` [E, I, D] and `down_proj`
 * [E, D, I]. Its state dict uses HF per-expert names (`{e}.gate_proj.weight` ...), as views.
 *
 * @example Stacked expert weights under per-expert HF names
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const experts = new mg.nn.MoEExperts(4, 16, 32, { seed: 0 });
 * console.log(experts.gateProj.shape, experts.downProj.shape); // [4, 32, 16] [4, 16, 32]
 * console.log([...experts.stateDict().keys()][0]); // 0.gate_proj.weight
 * ```
 */
export class MoEExperts extends Module {
  /** Number of experts E. */
  readonly numExperts: number;
  /** Stacked gate projections [E, I, D]. */
  readonly gateProj: Tensor;
  /** Stacked up projections [E, I, D]. */
  readonly upProj: Tensor;
  /** Stacked down projections [E, D, I]. */
  readonly downProj: Tensor;
  readonly #views: [string, Tensor][] = [];

  /** Creates E experts of width `intermediateSize`, each weight N(0, std²). */
  constructor(
    numExperts: number,
    hiddenSize: number,
    intermediateSize: number,
    options: { std?: number; seed?: number } = {},
  ) {
    super();
    this.numExperts = numExperts;
    const e = numExperts, d = hiddenSize, i = intermediateSize;
    const make = (name: string, shape: number[]) =>
      this.param(
        name,
        normalInit(shape, { std: options.std, seed: deriveSeed(options.seed, name) }),
      );
    try {
      this.gateProj = make("gate_proj", [e, i, d]);
      this.upProj = make("up_proj", [e, i, d]);
      this.downProj = make("down_proj", [e, d, i]);
    } catch (err) {
      this.dispose(); // the stacks made before the error
      throw err;
    }
    const stacked = [this.gateProj, this.upProj, this.downProj];
    for (let x = 0; x < e; x++) {
      PROJ.forEach((name, j) => {
        const t = stacked[j];
        const v = t.view(t.shape.slice(1), t.strides.slice(1), t.offset + x * t.strides[0]);
        v.keep();
        this.#views.push([`${x}.${name}.weight`, v]);
      });
    }
  }

  /** The stacked parameter names of this module (relative to it). */
  static readonly stackedNames: readonly string[] = PROJ;

  /** Per-expert HF names (views of the stacked parameters; do not dispose them). */
  protected override *ownStateEntries(): Generator<[string, Tensor]> {
    yield* this.#views;
  }

  /** Frees the per-expert views, then the parameters. */
  override dispose(): void {
    for (const [, v] of this.#views) v.dispose();
    this.#views.length = 0;
    super.dispose();
  }
}

/**
 * Options of `DeepseekMoE`.
 *
 * @example Seed a MoE block
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.MoEOptions = { seed: 3 };
 * console.log(new mg.nn.DeepseekMoE(mg.nn.makeConfig("tiny"), opts).experts.numExperts); // 8
 * ```
 */
export interface MoEOptions {
  /** Seed of the initialisation (the global generator when omitted). */
  seed?: number;
}

/**
 * The DeepSeekMoE block, REFERENCE §5 / HF `DeepseekV3MoE`:
 * s = sigmoid(x·gateᵀ) (f32), selection = topk(s + e_score_correction_bias, K) among the
 * experts of the `topk_group` best of `n_group` groups (group-limited routing, see
 * `moeRoute`; n_group 1 = no limit), weights =
 * s_sel / Σ s_sel · routed_scaling_factor (norm_topk_prob; else s_sel · factor), and
 * y = Σ_k w_k · Expert_sel_k(x) + shared_experts(x), Expert(x) = down(silu(gate(x)) ⊙ up(x)).
 * HF names: `gate.weight`, `gate.e_score_correction_bias`, `experts.{e}.*_proj.weight`,
 * `shared_experts.*_proj.weight` (width moe_intermediate_size · n_shared_experts).
 *
 * A training forward given a `StepStats` (in training mode) records there the expert loads
 * (i32 [E], pairs routed to each expert, summed over the step), the pairs routed and the
 * detached auxiliary loss. When `aux_loss_alpha` > 0 in training mode and the caller collects
 * auxiliary losses (`ctx.auxLosses`, as `KimiLM.loss` does), the differentiable scalar is
 * pushed there. The module keeps no statistics of its own.
 *
 * @example Route tokens to experts, then balance the load
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny"); // 8 routed experts, top-2, 1 shared expert
 * const moe = new mg.nn.DeepseekMoE(config, { seed: 0 });
 * const x = mg.randn([2, 16, config.hidden_size], { seed: 1, requiresGrad: true });
 * const stats = new mg.nn.StepStats();
 * const y = moe.forward(x, { stats });
 * y.square().mean().backward();
 * const rec = stats.moe(moe)!;
 * const load = (await rec.load.data()) as Int32Array; // pairs routed to each expert
 * console.log(y.shape, rec.pairs, load.reduce((a, b) => a + b)); // [2, 16, 128] 64 64 (32 tokens × top-2)
 * moe.updateBias(stats, 1e-3); // aux-loss-free balancing: raise the bias of under-loaded experts
 * stats.dispose();
 * ```
 */
export class DeepseekMoE extends Module {
  /** The configuration. */
  readonly config: KimiConfig;
  /** The router. */
  readonly gate: MoEGate;
  /** The routed experts (stacked). */
  readonly experts: MoEExperts;
  /** The shared experts, or null when n_shared_experts = 0. */
  readonly sharedExperts: MLP | null;

  /** Builds the block from the MoE fields of `config`. */
  constructor(config: KimiConfig, options: MoEOptions = {}) {
    super();
    const c = config;
    const problems: string[] = [];
    for (
      const k of [
        "hidden_size",
        "moe_intermediate_size",
        "n_routed_experts",
        "num_experts_per_tok",
      ] as const
    ) {
      if (!Number.isInteger(c[k]) || c[k] <= 0) {
        problems.push(`${k} must be a positive integer, got ${c[k]}`);
      }
    }
    if (c.num_experts_per_tok > c.n_routed_experts) {
      problems.push(
        `num_experts_per_tok ${c.num_experts_per_tok} exceeds n_routed_experts ${c.n_routed_experts}`,
      );
    }
    if (!Number.isInteger(c.n_shared_experts) || c.n_shared_experts < 0) {
      problems.push(`n_shared_experts must be a non-negative integer, got ${c.n_shared_experts}`);
    }
    if (!Number.isFinite(c.routed_scaling_factor)) {
      problems.push(`routed_scaling_factor must be finite, got ${c.routed_scaling_factor}`);
    }
    if (!(c.aux_loss_alpha >= 0)) {
      problems.push(`aux_loss_alpha must be >= 0, got ${c.aux_loss_alpha}`);
    }
    if (c.n_routed_experts > 65535) problems.push(`n_routed_experts must be <= 65535`);
    const ng = c.n_group, kg = c.topk_group;
    if (!Number.isInteger(ng) || ng < 1 || c.n_routed_experts % ng !== 0) {
      problems.push(`n_group must be a positive divisor of n_routed_experts, got ${ng}`);
    } else if (!Number.isInteger(kg) || kg < 1 || kg > ng) {
      problems.push(`topk_group must be an integer in 1..n_group (${ng}), got ${kg}`);
    } else if (kg < ng && c.n_routed_experts / ng < 2) {
      problems.push(`n_routed_experts / n_group must be >= 2 for group-limited routing`);
    }
    if (problems.length) {
      throw new MoongradError("DeepseekMoE", `invalid config:\n  ${problems.join("\n  ")}`);
    }
    // Every weight is checked against the device's limits before the first is allocated.
    const [E, D, I] = [c.n_routed_experts, c.hidden_size, c.moe_intermediate_size];
    const shared = I * c.n_shared_experts;
    for (
      const [name, shape] of [
        ["gate.weight", [E, D]],
        ["experts.gate_proj", [E, I, D]],
        ["experts.down_proj", [E, D, I]],
        ...(shared > 0 ? [["shared_experts.gate_proj.weight", [shared, D]]] : []),
      ] as [string, number[]][]
    ) checkAllocation(shape, "f32", `DeepseekMoE (${name})`);
    try {
      this.config = c;
      const std = c.initializer_range;
      const seed = options.seed;
      this.gate = this.module(
        "gate",
        new MoEGate(c.n_routed_experts, c.hidden_size, { std, seed: deriveSeed(seed, "gate") }),
      );
      this.experts = this.module(
        "experts",
        new MoEExperts(c.n_routed_experts, c.hidden_size, c.moe_intermediate_size, {
          std,
          seed: deriveSeed(seed, "experts"),
        }),
      );
      this.sharedExperts = c.n_shared_experts > 0
        ? this.module(
          "shared_experts",
          new MLP(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts, {
            std,
            seed: deriveSeed(seed, "shared_experts"),
          }),
        )
        : null;
    } catch (e) {
      this.dispose(); // the gate and experts made before the error
      throw e;
    }
  }

  /**
   * x f32 [..., D] → [..., D]. The leading axes are flattened to N tokens; for the auxiliary
   * loss a rank-3 input [B, T, D] is B sequences of T tokens, anything else one sequence.
   * `ctx`: where to record statistics (`stats`) and collect the auxiliary loss (`auxLosses`).
   * With `residual` (shaped like x: the decoder layer's input to this block), returns
   * residual + MoE(x), the residual added in the routed combine's kernel (no separate add):
   * (residual + routed) + shared, which differs from residual + (routed + shared) by rounding
   * only.
   */
  forward(x: Tensor, ctx: ForwardContext = {}, residual?: Tensor): Tensor {
    const op = "DeepseekMoE.forward";
    const c = this.config;
    const d = c.hidden_size;
    if (!(x instanceof Tensor)) throw new MoongradError(op, `x must be a Tensor, got ${typeof x}`);
    if (x.rank < 1 || x.shape[x.rank - 1] !== d || x.dtype !== "f32") {
      throw new MoongradError(op, `x must be f32 [..., ${d}], got ${x.dtype} ${fmtShape(x.shape)}`);
    }
    if (
      residual !== undefined &&
      (!(residual instanceof Tensor) || residual.dtype !== "f32" ||
        residual.shape.join() !== x.shape.join())
    ) {
      throw new MoongradError(
        op,
        `residual must be f32 ${fmtShape(x.shape)} like x, got ${
          residual instanceof Tensor
            ? `${residual.dtype} ${fmtShape(residual.shape)}`
            : typeof residual
        }`,
      );
    }
    const n = x.size / d;
    const k = c.num_experts_per_tok;
    const e = c.n_routed_experts;
    const stats = this.training ? checkStats(op, ctx.stats) : undefined;
    // Everything made here is freed when the forward returns, but the output and the aux loss
    // pushed into ctx.auxLosses (they move to the caller's scope); the nested scopes free the
    // expert intermediates as soon as the step consuming them has run.
    return scope(() => {
      const xf = reshape(x, [n, d]);
      const logits = this.gate.logits(xf);
      const { weights, indices } = moeRoute(logits, this.gate.eScoreCorrectionBias, k, {
        logits: true,
        scale: c.routed_scaling_factor,
        normalize: c.norm_topk_prob,
        nGroup: c.n_group,
        topkGroup: c.topk_group,
      });
      const plan = moePlan(indices, e, { trusted: true }); // moeRoute's ids are in range
      const { gateProj, upProj, downProj } = this.experts;
      const routed = scope(() => {
        const h = scope(() => {
          const [g, u] = scope(() => {
            const xs = moeDispatch(xf, plan);
            return [
              groupedMatmul(xs, gateProj, plan.offsets),
              groupedMatmul(xs, upProj, plan.offsets),
            ];
          });
          return swiglu(g, u);
        });
        const res = residual ? reshape(residual, [n, d]) : undefined;
        return moeCombine(groupedMatmul(h, downProj, plan.offsets), weights, plan, res);
      });
      // (residual +) routed + shared, the sums formed in the combine kernel and in the shared
      // down projection's epilogue.
      const y = this.sharedExperts ? this.sharedExperts.forward(xf, routed) : routed;
      let aux: Tensor | null = null;
      if (c.aux_loss_alpha > 0 && this.training && (ctx.auxLosses || stats)) {
        const [b, t] = x.rank === 3 ? [x.shape[0], x.shape[1]] : [1, n];
        aux = this.#auxLoss(sigmoid(logits), indices, b, t);
      }
      stats?.recordMoe(this, plan.counts, n * k, aux, indices);
      if (aux && ctx.auxLosses) ctx.auxLosses.push(aux);
      return reshape(y, x.shape);
    }, ctx.auxLosses);
  }

  /** α · mean over sequences of Σ_i f_i P_i (DeepSeek-V3 eq. 17–20). */
  #auxLoss(s: Tensor, indices: Tensor, b: number, t: number): Tensor {
    const c = this.config;
    const e = c.n_routed_experts;
    return scope(() => {
      const idx3 = reshape(indices, [b, t, c.num_experts_per_tok]);
      const f = noGrad(() => moeSequenceFraction(idx3, e));
      const p = mean(reshape(div(s, sum(s, -1, true)), [b, t, e]), 1);
      return mul(mean(sum(mul(f, p), 1)), c.aux_loss_alpha);
    });
  }

  /**
   * Aux-loss-free balancing after a step: bias_i += γ · sign(mean load − load_i) with the
   * loads `stats` recorded over the step's forwards, on the GPU, without gradient.
   */
  updateBias(stats: StepStats, gamma = 1e-3): void {
    const op = "DeepseekMoE.updateBias";
    const rec = checkStats(op, stats)?.moe(this);
    if (!rec) {
      throw new MoongradError(
        op,
        "these StepStats hold no forward of this MoE block: pass the stats to the step's " +
          "training forwards (model.loss(ids, targets, { stats }))",
      );
    }
    moeBiasUpdate(this.gate.eScoreCorrectionBias, rec.load, rec.pairs, gamma);
  }
}
