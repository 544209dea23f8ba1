/**
 * The Module system: a tree of layers whose parameters and buffers are registered explicitly
 * under names, so that every tensor has a Hugging Face style dotted name
 * ("model.layers.0.self_attn.q_proj.weight"). Parameters require grad and are what optimizers
 * update; buffers (e.g. MoE's `e_score_correction_bias`) are state without a gradient. Both go
 * into `stateDict()`.
 */
import "../ops/tensor_methods.ts"; // installs the Tensor methods this module calls
import { noGrad } from "../core/autograd.ts";
import type { DType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous } from "../ops/elementwise.ts";
import { randn, zeros } from "../ops/creation.ts";

/**
 * Name → tensor map of every parameter and buffer, by dotted name.
 *
 * @example Every parameter and buffer by its Hugging Face name
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const norm = new mg.nn.RMSNorm(8);
 * const sd: mg.nn.StateDict = norm.stateDict();
 * console.log([...sd.keys()], sd.get("weight")!.shape); // ["weight"] [8]
 * ```
 */
export type StateDict = Map<string, Tensor>;

/**
 * What `loadStateDict` accepts: a Map or a plain record of name → tensor.
 *
 * @example Load from a plain record
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(2, 2, { bias: false });
 * const weights: mg.nn.StateDictLike = { weight: mg.tensor([[1, 0], [0, 1]]) };
 * lin.loadStateDict(weights);
 * console.log(await lin.forward(mg.tensor([[3, 4]])).toArray()); // [[3, 4]]
 * ```
 */
export type StateDictLike = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

/**
 * Shape and dtype of one named tensor, as compared by `stateDictProblems`.
 *
 * @example Compare shapes without tensors
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const own = new Map<string, mg.nn.TensorSpec>([["w", { shape: [2, 2], dtype: "f32" }]]);
 * const file = new Map<string, mg.nn.TensorSpec>([["w", { shape: [2, 3], dtype: "f32" }]]);
 * console.log(mg.nn.stateDictProblems(own, file).problems); // ["shape mismatch for w: expected [2, 2], got [2, 3]"]
 * ```
 */
export interface TensorSpec {
  /** Size of each axis. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType | string;
}

/**
 * Options of `loadStateDict` / `io.loadInto`.
 *
 * @example Load a partial state dict
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(2, 2);
 * const opts: mg.nn.LoadOptions = { strict: false };
 * const { missing } = lin.loadStateDict({ weight: mg.zeros([2, 2]) }, opts);
 * console.log(missing); // ["bias"]
 * ```
 */
export interface LoadOptions {
  /**
   * When true (the default) missing and unexpected names are errors; when false they are
   * skipped and returned. Shape and dtype mismatches are always errors.
   */
  strict?: boolean;
}

/**
 * Names `loadStateDict` skipped in non-strict mode.
 *
 * @example What a non-strict load skipped
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(2, 2, { bias: false });
 * const r: mg.nn.LoadResult = lin.loadStateDict(
 *   { weight: mg.zeros([2, 2]), extra: mg.zeros([1]) },
 *   { strict: false },
 * );
 * console.log(r.missing, r.unexpected); // [] ["extra"]
 * ```
 */
export interface LoadResult {
  /** Names the module has that the state dict lacks. */
  missing: string[];
  /** Names the state dict has that the module lacks. */
  unexpected: string[];
}

const NAME = /^[A-Za-z0-9_]+$/;

/**
 * Base class of every layer. Subclasses register their tensors in the constructor with
 * `this.param(name, tensor)` (trainable), `this.buffer(name, tensor)` (state without gradient)
 * and their children with `this.module(name, child)`; each returns what it registers, so a
 * typed field can hold it:
 *
 * ```ts
 * class Scale extends Module {
 *   readonly weight = this.param("weight", mg.ones([4]));
 *   forward(x: Tensor): Tensor { return x.mul(this.weight); }
 * }
 * ```
 *
 * @example A custom layer with a parameter, a buffer and a child
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * class ScaledLinear extends mg.nn.Module {
 *   readonly proj = this.module("proj", new mg.nn.Linear(4, 4, { bias: false, seed: 0 }));
 *   readonly scale = this.param("scale", mg.ones([4]));
 *   readonly calls = this.buffer("calls", mg.zeros([1]));
 *   forward(x: mg.Tensor): mg.Tensor {
 *     return this.proj.forward(x).mul(this.scale);
 *   }
 * }
 * const m = new ScaledLinear();
 * console.log([...m.stateDict().keys()]); // ["scale", "calls", "proj.weight"]
 * console.log(m.numParameters()); // 20
 * m.forward(mg.ones([2, 4])).sum().backward();
 * console.log(m.scale.grad!.shape); // [4]
 * ```
 */
export abstract class Module {
  /** True in training mode (the default); set by `train()` / `eval()` on the whole tree. */
  training = true;
  readonly #params = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();

  #claim(kind: string, name: string): void {
    if (typeof name !== "string" || !NAME.test(name)) {
      throw new MoongradError(
        `${this.constructor.name}.${kind}`,
        `name ${JSON.stringify(name)} must be non-empty letters, digits or _ (no dots)`,
      );
    }
    if (this.#params.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new MoongradError(
        `${this.constructor.name}.${kind}`,
        `name "${name}" is already registered in this module`,
      );
    }
  }

  /** Registers a trainable parameter (marked requiresGrad) under `name`; returns it. */
  protected param(name: string, t: Tensor): Tensor {
    this.#claim("param", name);
    if (!(t instanceof Tensor)) {
      throw new MoongradError(`${this.constructor.name}.param`, `"${name}" must be a Tensor`);
    }
    t.requiresGrad_(true);
    t.keep();
    this.#params.set(name, t);
    return t;
  }

  /** Registers a buffer: state saved in the state dict but never given a gradient. */
  protected buffer(name: string, t: Tensor): Tensor {
    this.#claim("buffer", name);
    if (!(t instanceof Tensor)) {
      throw new MoongradError(`${this.constructor.name}.buffer`, `"${name}" must be a Tensor`);
    }
    t.keep();
    this.#buffers.set(name, t);
    return t;
  }

  /** Registers a child module under `name`; returns it. */
  protected module<M extends Module>(name: string, child: M): M {
    this.#claim("module", name);
    if (!(child instanceof Module)) {
      throw new MoongradError(`${this.constructor.name}.module`, `"${name}" must be a Module`);
    }
    this.#children.set(name, child);
    return child;
  }

  /** Direct children with their names, in registration order. */
  *namedChildren(): Generator<[string, Module]> {
    yield* this.#children;
  }

  /** This module and every descendant with dotted names ("" for this one), depth first. */
  *namedModules(prefix = ""): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, child] of this.#children) {
      yield* child.namedModules(prefix ? `${prefix}.${name}` : name);
    }
  }

  /** Every parameter of the tree with its dotted name, in registration order. */
  *namedParameters(prefix = ""): Generator<[string, Tensor]> {
    for (const [name, t] of this.#params) yield [prefix ? `${prefix}.${name}` : name, t];
    for (const [name, child] of this.#children) {
      yield* child.namedParameters(prefix ? `${prefix}.${name}` : name);
    }
  }

  /** Every buffer of the tree with its dotted name. */
  *namedBuffers(prefix = ""): Generator<[string, Tensor]> {
    for (const [name, t] of this.#buffers) yield [prefix ? `${prefix}.${name}` : name, t];
    for (const [name, child] of this.#children) {
      yield* child.namedBuffers(prefix ? `${prefix}.${name}` : name);
    }
  }

  /** Every parameter of the tree (what an optimizer updates). */
  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }

  /** Total number of parameter elements. */
  numParameters(): number {
    let n = 0;
    for (const [, t] of this.namedParameters()) n += t.size;
    return n;
  }

  /** Sets training mode on this module and every descendant; returns this. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  /** Sets evaluation mode (`train(false)`); returns this. */
  eval(): this {
    return this.train(false);
  }

  /**
   * Parameters and buffers by dotted name. The tensors are the module's own (not copies):
   * do not dispose them; read them, or save them with `io.saveSafetensors`.
   */
  stateDict(): StateDict {
    const sd: StateDict = new Map();
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, t] of m.ownStateEntries()) sd.set(prefix ? `${prefix}.${name}` : name, t);
    }
    return sd;
  }

  /**
   * This module's own state-dict entries under local names: its parameters, then its buffers.
   * Override to expose parameters under other names (stacked MoE experts appear as HF's
   * per-expert views); `stateDict`, `loadStateDict` and io follow for the whole tree.
   */
  protected *ownStateEntries(): Generator<[string, Tensor]> {
    yield* this.#params;
    yield* this.#buffers;
  }

  /**
   * Copies every tensor of `sd` into the parameter or buffer of the same name, in place, after
   * checking all names, shapes and dtypes first: one MoongradError lists every mismatch and
   * nothing is copied. Not recorded by autograd. Returns the names skipped (non-strict mode).
   */
  loadStateDict(sd: StateDictLike, options: LoadOptions = {}): LoadResult {
    const given = toMap(sd);
    const own = this.stateDict();
    const { problems, missing, unexpected } = stateDictProblems(own, given, options);
    if (problems.length) {
      throw new MoongradError(
        `${this.constructor.name}.loadStateDict`,
        `${problems.length} problem(s) loading the state dict:\n  ${problems.join("\n  ")}`,
      );
    }
    noGrad(() => {
      for (const [name, dst] of own) {
        const src = given.get(name);
        if (src) copyParam(src, dst);
      }
    });
    return { missing, unexpected };
  }

  /** Frees and clears the gradient of every parameter. */
  zeroGrad(): void {
    for (const [, t] of this.namedParameters()) t.zeroGrad();
  }

  /**
   * Frees every parameter, buffer and gradient of the tree (children's `dispose` is called, so
   * a subclass holding other tensors overrides it). The module is unusable after.
   */
  dispose(): void {
    for (const t of this.#params.values()) {
      t.zeroGrad();
      t.dispose();
    }
    for (const t of this.#buffers.values()) t.dispose();
    for (const child of this.#children.values()) child.dispose();
  }

  /** `using model = ...` support. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * A list of modules named "0", "1", … (HF's `nn.ModuleList`, e.g. `model.layers.3`).
 *
 * @example Indexed children, named "0", "1", ...
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const blocks = new mg.nn.ModuleList([new mg.nn.RMSNorm(4), new mg.nn.RMSNorm(4)]);
 * blocks.push(new mg.nn.RMSNorm(4));
 * console.log(blocks.length, [...blocks.stateDict().keys()]); // 3 ["0.weight", "1.weight", "2.weight"]
 * let x = mg.randn([2, 4], { seed: 0 });
 * for (const norm of blocks) x = norm.forward(x);
 * ```
 */
export class ModuleList<M extends Module = Module> extends Module {
  readonly #items: M[] = [];

  /** Creates the list from `items`. */
  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }

  /** Appends a module under the next index. */
  push(m: M): M {
    this.module(String(this.#items.length), m);
    this.#items.push(m);
    return m;
  }

  /** The module at `i`. */
  at(i: number): M {
    const m = this.#items[i];
    if (!m) {
      throw new MoongradError(
        "ModuleList.at",
        `index ${i} is out of range for ${this.#items.length} modules`,
      );
    }
    return m;
  }

  /** Number of modules. */
  get length(): number {
    return this.#items.length;
  }

  /** Iterates the modules in order. */
  [Symbol.iterator](): Iterator<M> {
    return this.#items[Symbol.iterator]();
  }
}

function toMap(sd: StateDictLike): Map<string, Tensor> {
  if (sd instanceof Map) return new Map(sd);
  if (sd && typeof sd === "object") return new Map(Object.entries(sd as Record<string, Tensor>));
  throw new MoongradError("loadStateDict", "the state dict must be a Map or a record of tensors");
}

/**
 * Compares what a module holds (`own`) with what is offered (`given`) and returns one line
 * per problem: missing and unexpected names (errors only when strict), shape and dtype
 * mismatches (always errors). Used by `loadStateDict` and `io.loadInto`.
 *
 * @example Check a checkpoint's names and shapes before loading it
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const model = new mg.nn.Linear(4, 2);
 * const given = new Map([["weight", mg.zeros([2, 4])]]);
 * const r = mg.nn.stateDictProblems(model.stateDict(), given, { strict: true });
 * console.log(r.problems); // ["missing bias (f32 [2])"]
 * ```
 */
export function stateDictProblems(
  own: ReadonlyMap<string, TensorSpec>,
  given: ReadonlyMap<string, TensorSpec>,
  options: LoadOptions = {},
): { problems: string[]; missing: string[]; unexpected: string[] } {
  const strict = options.strict ?? true;
  const problems: string[] = [];
  const missing: string[] = [];
  const unexpected: string[] = [];
  for (const [name, want] of own) {
    const got = given.get(name);
    if (!got) {
      missing.push(name);
      if (strict) problems.push(`missing ${name} (${want.dtype} ${fmtShape(want.shape)})`);
      continue;
    }
    if (got instanceof Tensor && got.isDisposed) {
      problems.push(`${name}: the given tensor was disposed`);
      continue;
    }
    const sameShape = got.shape.length === want.shape.length &&
      got.shape.every((d, i) => d === want.shape[i]);
    if (!sameShape) {
      problems.push(
        `shape mismatch for ${name}: expected ${fmtShape(want.shape)}, got ${fmtShape(got.shape)}`,
      );
    }
    if (got.dtype !== want.dtype) {
      problems.push(`dtype mismatch for ${name}: expected ${want.dtype}, got ${got.dtype}`);
    }
  }
  for (const [name, got] of given) {
    if (own.has(name)) continue;
    unexpected.push(name);
    if (strict) problems.push(`unexpected ${name} (${got.dtype} ${fmtShape(got.shape)})`);
  }
  return { problems, missing, unexpected };
}

/**
 * Copies `src` into the parameter `dst` in place (handles a source sharing dst's storage).
 *
 * @example Overwrite a parameter in place
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(2, 2, { bias: false });
 * mg.nn.copyParam(mg.tensor([[1, 2], [3, 4]]), lin.weight);
 * console.log(await lin.weight.toArray()); // [[1, 2], [3, 4]]
 * ```
 */
export function copyParam(src: Tensor, dst: Tensor): void {
  if (src === dst) return;
  if (src.storage("loadStateDict").buf === dst.storage("loadStateDict").buf) {
    const same = src.offset === dst.offset && src.strides.every((s, i) => s === dst.strides[i]);
    if (same) return;
    const c = contiguous(src);
    dst.assign(c);
    c.dispose();
    return;
  }
  dst.assign(src);
}

/**
 * Initialisation options shared by the layers (HF `_init_weights`).
 *
 * @example Seeded, narrower initialisation
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const init: mg.nn.InitOptions = { std: 0.006, seed: 1 };
 * const a = new mg.nn.Embedding(100, 16, init);
 * const b = new mg.nn.Embedding(100, 16, init);
 * console.log(await a.weight.sub(b.weight).abs().max().item()); // 0 (same seed, same weights)
 * ```
 */
export interface InitOptions {
  /** Standard deviation of the normal initialisation of weights (HF `initializer_range`). */
  std?: number;
  /** Seed of the initialisation; the global generator (`mg.manualSeed`) when omitted. */
  seed?: number;
  /** Parameter dtype (default f32). */
  dtype?: "f32" | "f16";
}

/**
 * The default `initializer_range` of HF configs.
 *
 * @example HF's default initializer_range
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.nn.DEFAULT_INIT_STD); // 0.02
 * ```
 */
export const DEFAULT_INIT_STD = 0.02;

/**
 * A seed for the child `name` of a module seeded with `seed` (FNV-1a of the name mixed with
 * the seed), so a composite module seeded once initialises every child deterministically and
 * differently. Undefined stays undefined (the global generator is used).
 *
 * @example One seed for a composite module, a different one per child
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const seed = 7;
 * const q = mg.nn.normalInit([4, 4], { seed: mg.nn.deriveSeed(seed, "q_proj") });
 * const k = mg.nn.normalInit([4, 4], { seed: mg.nn.deriveSeed(seed, "k_proj") });
 * console.log(mg.nn.deriveSeed(seed, "q_proj") === mg.nn.deriveSeed(seed, "k_proj")); // false
 * console.log(await q.sub(k).abs().max().item() > 0); // true
 * ```
 */
export function deriveSeed(seed: number | undefined, name: string): number | undefined {
  if (seed === undefined) return undefined;
  let h = (0x811c9dc5 ^ (seed >>> 0)) >>> 0;
  for (const ch of `${Math.floor(seed / 2 ** 32)}/${name}`) {
    h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d) >>> 0;
  h ^= h >>> 12;
  return h >>> 0;
}

/**
 * A weight of `shape` drawn from N(0, std²) (HF's normal init), seeded as `options` says.
 *
 * @example A weight drawn from N(0, std²)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const w = mg.nn.normalInit([512, 512], { std: 0.02, seed: 3 });
 * const std = Math.sqrt(await w.var().item());
 * console.log(Math.abs(std - 0.02) < 0.001); // true
 * ```
 */
export function normalInit(shape: readonly number[], options: InitOptions = {}): Tensor {
  const std = options.std ?? DEFAULT_INIT_STD;
  if (!(std >= 0) || !Number.isFinite(std)) {
    throw new MoongradError("init", `std must be a finite number >= 0, got ${std}`);
  }
  return randn(shape, { std, seed: options.seed, dtype: options.dtype ?? "f32" });
}

/**
 * A zero-initialised tensor (HF's bias init).
 *
 * @example A bias of zeros
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.nn.zerosInit([3]).toArray()); // [0, 0, 0]
 * ```
 */
export function zerosInit(shape: readonly number[], options: InitOptions = {}): Tensor {
  return zeros(shape, { dtype: options.dtype ?? "f32" });
}
