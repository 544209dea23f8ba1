/**
 * The Module system: a tree of layers whose parameters and buffers are registered explicitly
 * under names, so that every tensor has a Hugging Face style dotted name
 * ("model.layers.0.self_attn.q_proj.weight"). Parameters require grad and are what optimizers
 * update; buffers (e.g. MoE's `e_score_correction_bias`) are state without a gradient. Both go
 * into `stateDict()`.
 */
import { noGrad } from "../core/autograd.ts";
import type { DType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous } from "../ops/elementwise.ts";
import { randn, zeros } from "../ops/creation.ts";

/** Name → tensor map of every parameter and buffer, by dotted name. */
export type StateDict = Map<string, Tensor>;

/** What `loadStateDict` accepts: a Map or a plain record of name → tensor. */
export type StateDictLike = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

/** Shape and dtype of one named tensor, as compared by `stateDictProblems`. */
export interface TensorSpec {
  /** Size of each axis. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType | string;
}

/** Options of `loadStateDict` / `io.loadInto`. */
export interface LoadOptions {
  /**
   * When true (the default) missing and unexpected names are errors; when false they are
   * skipped and returned. Shape and dtype mismatches are always errors.
   */
  strict?: boolean;
}

/** Names `loadStateDict` skipped in non-strict mode. */
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

/** A list of modules named "0", "1", … (HF's `nn.ModuleList`, e.g. `model.layers.3`). */
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

/** Copies `src` into the parameter `dst` in place (handles a source sharing dst's storage). */
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

/** Initialisation options shared by the layers (HF `_init_weights`). */
export interface InitOptions {
  /** Standard deviation of the normal initialisation of weights (HF `initializer_range`). */
  std?: number;
  /** Seed of the initialisation; the global generator (`mg.manualSeed`) when omitted. */
  seed?: number;
  /** Parameter dtype (default f32). */
  dtype?: "f32" | "f16";
}

/** The default `initializer_range` of HF configs. */
export const DEFAULT_INIT_STD = 0.02;

/**
 * A seed for the child `name` of a module seeded with `seed` (FNV-1a of the name mixed with
 * the seed), so a composite module seeded once initialises every child deterministically and
 * differently. Undefined stays undefined (the global generator is used).
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

/** A weight of `shape` drawn from N(0, std²) (HF's normal init), seeded as `options` says. */
export function normalInit(shape: readonly number[], options: InitOptions = {}): Tensor {
  const std = options.std ?? DEFAULT_INIT_STD;
  if (!(std >= 0) || !Number.isFinite(std)) {
    throw new MoongradError("init", `std must be a finite number >= 0, got ${std}`);
  }
  return randn(shape, { std, seed: options.seed, dtype: options.dtype ?? "f32" });
}

/** A zero-initialised tensor (HF's bias init). */
export function zerosInit(shape: readonly number[], options: InitOptions = {}): Tensor {
  return zeros(shape, { dtype: options.dtype ?? "f32" });
}
