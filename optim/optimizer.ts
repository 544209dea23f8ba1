/**
 * The optimizer base: named parameter groups with their own hyper-parameters, lazily created
 * per-parameter state on the GPU, `step()` / `zeroGrad()`, and a state dict that resumes a
 * run exactly (state tensors, per-parameter step counts, the step counter, hyper-parameters).
 */
import { noGrad } from "../core/autograd.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous } from "../ops/elementwise.ts";
import { zeros } from "../ops/creation.ts";
import { copyInto } from "../ops/copy.ts";
import { flagNonFinite } from "../ops/optim.ts";
import { Module } from "../nn/module.ts";
import type { LrSchedule } from "./schedule.ts";

/**
 * A learning rate: a number, or a schedule evaluated at each step.
 *
 * @example A constant rate or a schedule
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const constant: mg.optim.LearningRate = 3e-4;
 * const warm: mg.optim.LearningRate = mg.optim.linearWarmup({ peak: 3e-4, warmupSteps: 100 });
 * console.log(constant, warm(49)); // 0.0003 0.00015
 * ```
 */
export type LearningRate = number | LrSchedule;

/**
 * A parameter with its name (names key the state dict).
 *
 * @example Name the tensors of a hand-built model
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const w = mg.randn([4, 8], { seed: 0, requiresGrad: true });
 * const named: mg.optim.NamedParam[] = [["proj.weight", w]];
 * const opt = new mg.optim.AdamW(named, { lr: 1e-3 }); // state dict keys start with "proj.weight"
 * ```
 */
export type NamedParam = readonly [string, Tensor];

/**
 * Where parameters come from: a Module (its `namedParameters()`), tensors, or named tensors.
 *
 * @example Three ways to give parameters
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const a: mg.optim.ParamSource = lin; // a Module: its namedParameters()
 * const b: mg.optim.ParamSource = [lin.weight]; // bare tensors, named "0", "1", ...
 * const c: mg.optim.ParamSource = [["w", lin.weight]]; // named tensors
 * console.log(new mg.optim.SGD(a, { lr: 0.1 }).groups[0].names); // ["weight"]
 * ```
 */
export type ParamSource = Module | readonly Tensor[] | readonly NamedParam[];

/**
 * Hyper-parameters every optimizer has.
 *
 * @example The one required option
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.BaseOptions = { lr: 1e-3 };
 * ```
 */
export interface BaseOptions {
  /** Learning rate (a number or a schedule of the step). */
  lr: LearningRate;
}

/**
 * A parameter group as given to a constructor: its parameters and per-group overrides.
 *
 * @example A group with its own weight decay
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { bias: true, seed: 0 });
 * const noDecay: mg.optim.ParamGroupSpec<mg.optim.AdamWOptions> = {
 *   name: "no_decay",
 *   params: [["bias", lin.bias!]],
 *   weightDecay: 0,
 * };
 * const opt = new mg.optim.AdamW([{ params: [["weight", lin.weight]] }, noDecay], { lr: 1e-3 });
 * ```
 */
export type ParamGroupSpec<H extends BaseOptions> =
  & { params: ParamSource; name?: string }
  & Partial<H>;

/**
 * What an optimizer constructor accepts: one source for a single group, or a list of groups.
 *
 * @example One source or a list of groups
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const single: mg.optim.ParamsInput<mg.optim.SgdOptions> = lin;
 * const groups: mg.optim.ParamsInput<mg.optim.SgdOptions> = [{ params: lin, lr: 0.01 }];
 * console.log(new mg.optim.SGD(groups, { lr: 0.1 }).groups[0].name); // "group0"
 * ```
 */
export type ParamsInput<H extends BaseOptions> = ParamSource | readonly ParamGroupSpec<H>[];

/**
 * A resolved parameter group.
 *
 * @example Change a group's hyper-parameters between steps
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opt = new mg.optim.AdamW(new mg.nn.Linear(8, 4, { seed: 0 }), { lr: 1e-3 });
 * const g: mg.optim.ParamGroup<mg.optim.AdamWOptions> = opt.groups[0];
 * console.log(g.name, g.names); // "default" ["weight"]
 * g.options.weightDecay = 0; // takes effect at the next step()
 * ```
 */
export interface ParamGroup<H extends BaseOptions> {
  /** Group name ("default" for a single group, else the given name or "group<i>"). */
  name: string;
  /** The parameters, updated in place. */
  params: Tensor[];
  /** Their names, parallel to `params`. */
  names: string[];
  /** Hyper-parameters (defaults merged with the group's overrides); may be edited between steps. */
  options: H;
}

/**
 * Options shared by every optimizer's constructor.
 *
 * @example Reject NaN/Inf gradients
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const common: mg.optim.CommonOptions = { checkFinite: true };
 * const opt = new mg.optim.SGD(new mg.nn.Linear(8, 4, { seed: 0 }), { lr: 0.1, ...common });
 * // await opt.step() now rejects with a MoongradError naming any non-finite gradient
 * ```
 */
export interface CommonOptions {
  /**
   * Check every gradient for NaN/±Inf before updating (default false). This necessarily reads
   * a flag per parameter back from the GPU (one ~10 ms round trip on CPU adapters per step):
   * `step()`'s promise then rejects with a MoongradError naming the bad parameters, and no
   * parameter is updated. Without it `step()` never waits.
   */
  checkFinite?: boolean;
}

/**
 * Serialisable hyper-parameter value (schedules are code and are stored as "<schedule>").
 *
 * @example Hyper-parameters as stored in a state dict
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const values: mg.optim.OptionValue[] = [1e-3, true, "<schedule>", [0.9, 0.95], null];
 * ```
 */
export type OptionValue = number | boolean | string | number[] | null;

/**
 * A snapshot of an optimizer for exact resumption. The tensors are copies owned by the caller.
 *
 * @example Save and resume an optimizer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const opt = new mg.optim.AdamW(lin, { lr: 1e-3 });
 * lin.forward(mg.randn([2, 8], { seed: 1 })).square().mean().backward();
 * await opt.step();
 * const sd: mg.optim.OptimizerStateDict = opt.stateDict();
 * console.log(sd.kind, sd.step, [...sd.state.keys()]); // AdamW 1 ["weight.exp_avg", "weight.exp_avg_sq"]
 * const resumed = new mg.optim.AdamW(lin, { lr: 1e-3 });
 * resumed.loadStateDict(sd);
 * mg.optim.disposeStateDict(sd);
 * ```
 */
export interface OptimizerStateDict {
  /** Optimizer kind ("AdamW", "SGD", "Muon"). */
  kind: string;
  /** Number of completed `step()` calls (positions the learning-rate schedules). */
  step: number;
  /** Each group's name, parameter names and hyper-parameters. */
  groups: { name: string; names: string[]; options: Record<string, OptionValue> }[];
  /** Per-parameter update counts (parameters skipped for lack of a gradient do not advance). */
  paramSteps: Record<string, number>;
  /** State tensors keyed `<param name>.<slot>` (e.g. `layers.0.weight.exp_avg`). */
  state: Map<string, Tensor>;
}

/**
 * Per-parameter state: its update count and named state tensors.
 *
 * @example Per-parameter state seen from a subclass
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const s: mg.optim.ParamState = { step: 0, slots: new Map() };
 * console.log(s.step, s.slots.size); // 0 0
 * ```
 */
export interface ParamState {
  /** Updates applied to this parameter so far. */
  step: number;
  /** State tensors by slot name (created on first use). */
  slots: Map<string, Tensor>;
}

/**
 * The update context `Optimizer.update` receives for one parameter.
 *
 * @example A custom optimizer's update hook
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * class PlainSGD extends mg.optim.Optimizer<mg.optim.BaseOptions> {
 *   constructor(params: mg.optim.ParamsInput<mg.optim.BaseOptions>, lr: number) {
 *     super("PlainSGD", params, { lr });
 *   }
 *   protected update(ctx: mg.optim.UpdateContext<mg.optim.BaseOptions>): void {
 *     // ctx.param and ctx.grad: contiguous f32 of one shape; ctx.lr: this step's rate.
 *     // Record an in-place GPU update of ctx.param here (the built-in optimizers each
 *     // dispatch one fused kernel); the parameter must keep its identity.
 *     console.log(ctx.name, ctx.state.step, ctx.lr);
 *   }
 * }
 * ```
 */
export interface UpdateContext<H extends BaseOptions> {
  /** The parameter (contiguous f32), updated in place. */
  param: Tensor;
  /** Its gradient (contiguous f32, same shape). */
  grad: Tensor;
  /** Its name. */
  name: string;
  /** Its state; `state.step` already counts this update (1 on the first). */
  state: ParamState;
  /** The group's hyper-parameters. */
  options: H;
  /** The learning rate of this step (the schedule evaluated). */
  lr: number;
}

function isNamedList(x: readonly unknown[]): x is readonly NamedParam[] {
  return x.length > 0 &&
    x.every((e) => Array.isArray(e) && e.length === 2 && e[1] instanceof Tensor);
}

/**
 * Resolves a parameter source to named tensors (`prefix` names unnamed tensors).
 *
 * @example Resolve a parameter source
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * console.log(mg.optim.namedParams("demo", [lin.weight], "p").map(([n]) => n)); // ["p0"]
 * console.log(mg.optim.namedParams("demo", lin, "").map(([n]) => n)); // ["weight"]
 * ```
 */
export function namedParams(op: string, src: ParamSource, prefix: string): NamedParam[] {
  if (src instanceof Module) return [...src.namedParameters()];
  if (!Array.isArray(src)) {
    throw new MoongradError(op, "params must be a Module, a list of tensors or of [name, tensor]");
  }
  const list = src as readonly unknown[];
  if (isNamedList(list)) return list.map(([n, t]) => [n, t] as const);
  return list.map((t, i) => {
    if (!(t instanceof Tensor)) {
      throw new MoongradError(op, `params[${i}] is not a Tensor (got ${String(t)})`);
    }
    return [`${prefix}${i}`, t] as const;
  });
}

function isGroupList<H extends BaseOptions>(x: ParamsInput<H>): x is readonly ParamGroupSpec<H>[] {
  return Array.isArray(x) && x.length > 0 &&
    x.every((e) => e !== null && typeof e === "object" && !(e instanceof Tensor) && "params" in e);
}

/**
 * Base class of the optimizers. Subclasses implement `update` (record the fused update of
 * one parameter) and may override `validateParam`. Updates happen in place on the GPU under
 * `noGrad`; parameters keep their identity and nothing is read back (unless `checkFinite`).
 *
 * @example The training loop every optimizer shares
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const opt: mg.optim.Optimizer<mg.optim.AdamWOptions> = new mg.optim.AdamW(lin, { lr: 1e-3 });
 * for (let i = 0; i < 3; i++) {
 *   mg.scope(() => lin.forward(mg.randn([2, 8], { seed: i })).square().mean().backward());
 *   await opt.step();
 *   opt.zeroGrad();
 * }
 * console.log(opt.stepCount); // 3
 * ```
 */
export abstract class Optimizer<H extends BaseOptions> {
  /** Optimizer kind, stored in state dicts. */
  readonly kind: string;
  /** The parameter groups (edit `options` between steps to change hyper-parameters). */
  readonly groups: ParamGroup<H>[];
  /** Number of completed `step()` calls. */
  stepCount = 0;
  /** Whether `step()` checks gradients for NaN/Inf first. */
  readonly checkFinite: boolean;
  readonly #state = new Map<Tensor, ParamState>();

  /** Resolves `params` into groups, validating names, dtypes and duplicates. */
  constructor(kind: string, params: ParamsInput<H>, defaults: H, common: CommonOptions = {}) {
    this.kind = kind;
    this.checkFinite = common.checkFinite ?? false;
    const specs: ParamGroupSpec<H>[] = isGroupList(params)
      ? [...params]
      : [{ params: params as ParamSource } as ParamGroupSpec<H>];
    const single = !isGroupList(params);
    const seen = new Map<Tensor, string>();
    const names = new Set<string>();
    this.groups = specs.map((spec, gi) => {
      const { params: src, name, ...overrides } = spec;
      const named = namedParams(kind, src, single ? "" : `${gi}.`);
      const options = { ...defaults } as H;
      for (const [k, v] of Object.entries(overrides)) {
        if (v !== undefined) (options as Record<string, unknown>)[k] = v;
      }
      for (const [n, t] of named) {
        if (seen.has(t)) {
          throw new MoongradError(
            kind,
            `parameter "${n}" appears twice (also as "${seen.get(t)}")`,
          );
        }
        if (names.has(n)) throw new MoongradError(kind, `two parameters are named "${n}"`);
        seen.set(t, n);
        names.add(n);
        t.storage(kind);
        this.validateParam(n, t, options);
      }
      this.validateOptions(options);
      return {
        name: name ?? (single ? "default" : `group${gi}`),
        params: named.map(([, t]) => t),
        names: named.map(([n]) => n),
        options,
      };
    });
  }

  /** Checks one parameter at construction (default: contiguous f32). */
  protected validateParam(name: string, p: Tensor, _options: H): void {
    if (p.dtype !== "f32") {
      throw new MoongradError(
        this.kind,
        `parameter "${name}" is ${p.dtype}; only f32 parameters are supported`,
      );
    }
    if (!p.isContiguous) {
      throw new MoongradError(
        this.kind,
        `parameter "${name}" ${fmtShape(p.shape)} must be contiguous`,
      );
    }
  }

  /** Checks a group's hyper-parameters (subclasses extend; call super). */
  protected validateOptions(options: H): void {
    const lr = options.lr;
    if (typeof lr !== "function" && !(Number.isFinite(lr) && lr >= 0)) {
      throw new MoongradError(this.kind, `lr must be a number >= 0 or a schedule, got ${lr}`);
    }
  }

  /** Records the fused update of one parameter (inside `noGrad`). */
  protected abstract update(ctx: UpdateContext<H>): void;

  /** The learning rate a group uses at the next step. */
  lrOf(group: ParamGroup<H>): number {
    const lr = group.options.lr;
    const v = typeof lr === "function" ? lr(this.stepCount) : lr;
    if (!Number.isFinite(v)) {
      throw new MoongradError(
        this.kind,
        `group "${group.name}": lr is ${v} at step ${this.stepCount}`,
      );
    }
    return v;
  }

  /** A state tensor of `param`, created as zeros (shaped like it) on first use. */
  protected slot(param: Tensor, state: ParamState, name: string): Tensor {
    let t = state.slots.get(name);
    if (!t) {
      t = zeros(param.shape).keep();
      state.slots.set(name, t);
    }
    return t;
  }

  /** Whether `slot` would return an existing tensor (false before its first update). */
  protected hasSlot(state: ParamState, name: string): boolean {
    return state.slots.has(name);
  }

  #stateOf(p: Tensor): ParamState {
    let s = this.#state.get(p);
    if (!s) {
      s = { step: 0, slots: new Map() };
      this.#state.set(p, s);
    }
    return s;
  }

  /** Every (group, parameter, name) with a gradient, after checking gradient shape and dtype. */
  #withGrads(): { group: ParamGroup<H>; p: Tensor; g: Tensor; name: string }[] {
    const out: { group: ParamGroup<H>; p: Tensor; g: Tensor; name: string }[] = [];
    for (const group of this.groups) {
      group.params.forEach((p, i) => {
        const g = p.grad;
        if (!g) return;
        const name = group.names[i];
        if (g.dtype !== p.dtype) {
          throw new MoongradError(
            this.kind,
            `gradient of "${name}" is ${g.dtype}, parameter is ${p.dtype}`,
          );
        }
        if (g.shape.length !== p.shape.length || g.shape.some((d, j) => d !== p.shape[j])) {
          throw new MoongradError(
            this.kind,
            `gradient of "${name}" has shape ${fmtShape(g.shape)}, parameter ${fmtShape(p.shape)}`,
          );
        }
        out.push({ group, p, g, name });
      });
    }
    return out;
  }

  /**
   * Applies one update to every parameter that has a gradient (others are skipped and their
   * step counts do not advance). The work is recorded synchronously; the promise only
   * matters with `checkFinite` (it rejects before any update when a gradient is not finite).
   */
  async step(): Promise<void> {
    if (this.checkFinite) await this.assertFinite();
    this.applyStep();
  }

  /** Records one update now, without the finite check (what `step()` does after it). */
  applyStep(): void {
    const items = this.#withGrads();
    const lrs = new Map(this.groups.map((g) => [g, this.lrOf(g)]));
    noGrad(() => {
      this.updateAll(items.map(({ group, p, g, name }) => {
        const state = this.#stateOf(p);
        state.step++;
        return { param: p, grad: g, name, state, options: group.options, lr: lrs.get(group)! };
      }));
    });
    this.stepCount++;
  }

  /**
   * Records the updates of one step, every parameter with a gradient in group order (inside
   * `noGrad`; each `state.step` already counts this update). Here `grad` is the gradient as
   * backward left it, possibly a strided view. The default makes each gradient contiguous and
   * calls `update` per parameter; an optimizer that updates many parameters per dispatch
   * (Muon's batched Newton–Schulz) overrides it.
   */
  protected updateAll(items: UpdateContext<H>[]): void {
    for (const ctx of items) {
      const grad = ctx.grad.isContiguous ? ctx.grad : contiguous(ctx.grad);
      try {
        this.update({ ...ctx, grad });
      } finally {
        if (grad !== ctx.grad) grad.dispose();
      }
    }
  }

  /**
   * Rejects with a MoongradError naming every parameter whose gradient holds NaN or ±Inf
   * (bit-pattern test on the GPU, one flag per parameter read back in one round trip).
   */
  async assertFinite(): Promise<void> {
    const items = this.#withGrads();
    if (items.length) await this.#assertFinite(items);
  }

  async #assertFinite(items: { g: Tensor; name: string }[]): Promise<void> {
    const flags = zeros([items.length], { dtype: "i32" });
    try {
      noGrad(() => {
        items.forEach(({ g }, i) => {
          const c = g.isContiguous ? g : contiguous(g);
          flagNonFinite(c, flags, i);
          if (c !== g) c.dispose();
        });
      });
      const f = await flags.data();
      const bad = items.filter((_, i) => f[i] !== 0).map((x) => x.name);
      if (bad.length) {
        throw new MoongradError(
          this.kind,
          `non-finite (NaN or ±Inf) gradient in ${bad.length} parameter(s): ${
            bad.join(", ")
          }; no parameter was updated`,
        );
      }
    } finally {
      flags.dispose();
    }
  }

  /** Frees and clears the gradient of every parameter. */
  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) p.zeroGrad();
  }

  /** Every parameter name with its tensor, across groups. */
  namedParameters(): NamedParam[] {
    return this.groups.flatMap((g) => g.params.map((p, i) => [g.names[i], p] as const));
  }

  /**
   * A snapshot for exact resumption: copies of every state tensor (the caller disposes them,
   * e.g. after saving), step counts and hyper-parameters (schedules as "<schedule>").
   */
  stateDict(): OptimizerStateDict {
    const state = new Map<string, Tensor>();
    const paramSteps: Record<string, number> = {};
    noGrad(() => {
      for (const [name, p] of this.namedParameters()) {
        const s = this.#state.get(p);
        if (!s) continue;
        paramSteps[name] = s.step;
        for (const [slot, t] of s.slots) state.set(`${name}.${slot}`, contiguousCopy(t));
      }
    });
    return {
      kind: this.kind,
      step: this.stepCount,
      groups: this.groups.map((g) => ({
        name: g.name,
        names: [...g.names],
        options: Object.fromEntries(
          Object.entries(g.options).map(([k, v]) => [k, serialOption(v)]),
        ),
      })),
      paramSteps,
      state,
    };
  }

  /**
   * Restores a snapshot from `stateDict()` after checking it all first: the kind, the groups
   * and their parameter names, and each state tensor's shape and dtype; one MoongradError
   * lists every mismatch and nothing changes. Hyper-parameters are restored except schedules
   * (code, kept as constructed; the restored step counter positions them). Tensors are copied.
   */
  loadStateDict(sd: OptimizerStateDict): void {
    const problems: string[] = [];
    if (sd.kind !== this.kind) problems.push(`kind: expected ${this.kind}, got ${sd.kind}`);
    const own = new Map(this.namedParameters());
    const given = new Set(sd.groups.flatMap((g) => g.names));
    for (const n of own.keys()) if (!given.has(n)) problems.push(`missing parameter ${n}`);
    for (const n of given) if (!own.has(n)) problems.push(`unexpected parameter ${n}`);
    if (sd.groups.length !== this.groups.length) {
      problems.push(`expected ${this.groups.length} group(s), got ${sd.groups.length}`);
    } else {
      sd.groups.forEach((g, i) => {
        const mine = this.groups[i].names;
        if (g.names.length !== mine.length || g.names.some((n, j) => n !== mine[j])) {
          problems.push(`group ${i} (${this.groups[i].name}) holds other parameters`);
        }
      });
    }
    for (const [key, t] of sd.state) {
      const dot = key.lastIndexOf(".");
      const p = own.get(key.slice(0, dot));
      if (!p) {
        if (dot < 0 || given.has(key.slice(0, dot))) {
          problems.push(`state ${key}: no such parameter`);
        }
        continue;
      }
      if (t.isDisposed) problems.push(`state ${key}: tensor was disposed`);
      else if (
        t.dtype !== "f32" || t.shape.length !== p.shape.length ||
        t.shape.some((d, j) => d !== p.shape[j])
      ) {
        problems.push(
          `state ${key}: expected f32 ${fmtShape(p.shape)}, got ${t.dtype} ${fmtShape(t.shape)}`,
        );
      }
    }
    for (const n of Object.keys(sd.paramSteps)) {
      if (!own.has(n)) problems.push(`paramSteps: unexpected parameter ${n}`);
    }
    if (problems.length) {
      throw new MoongradError(
        `${this.kind}.loadStateDict`,
        `${problems.length} problem(s) loading the optimizer state dict:\n  ${
          problems.join("\n  ")
        }`,
      );
    }
    noGrad(() => {
      for (const s of this.#state.values()) for (const t of s.slots.values()) t.dispose();
      this.#state.clear();
      for (const [name, p] of own) {
        if (!(name in sd.paramSteps)) continue;
        const s = this.#stateOf(p);
        s.step = sd.paramSteps[name];
        const prefix = `${name}.`;
        for (const [key, t] of sd.state) {
          if (!key.startsWith(prefix) || key.lastIndexOf(".") !== name.length) continue;
          const dst = zeros(p.shape).keep();
          copyInto(t, dst);
          s.slots.set(key.slice(prefix.length), dst);
        }
      }
    });
    this.groups.forEach((g, i) => {
      for (const [k, v] of Object.entries(sd.groups[i].options)) {
        const cur = (g.options as Record<string, unknown>)[k];
        if (typeof cur === "function" || v === "<schedule>" || v === null) continue;
        (g.options as Record<string, unknown>)[k] = v;
      }
    });
    this.stepCount = sd.step;
  }

  /** Frees every state tensor (parameters and gradients are not touched). */
  dispose(): void {
    for (const s of this.#state.values()) for (const t of s.slots.values()) t.dispose();
    this.#state.clear();
  }
}

function serialOption(v: unknown): OptionValue {
  if (typeof v === "function") return "<schedule>";
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "number")) return [...v];
  return null;
}

function contiguousCopy(t: Tensor): Tensor {
  const out = Tensor.empty(t.shape, t.dtype);
  copyInto(t, out);
  return out;
}

/**
 * Disposes every tensor of an optimizer state dict.
 *
 * @example Free a snapshot once it is saved or loaded
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opt = new mg.optim.SGD(new mg.nn.Linear(8, 4, { seed: 0 }), { lr: 0.1, momentum: 0.9 });
 * const sd = opt.stateDict();
 * mg.optim.disposeStateDict(sd); // the state tensors are copies owned by the caller
 * ```
 */
export function disposeStateDict(sd: OptimizerStateDict): void {
  for (const t of sd.state.values()) t.dispose();
}
