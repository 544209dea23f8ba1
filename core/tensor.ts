import { byteSize, decode, type DType, type TensorData } from "./dtype.ts";
import { fmtShape, MoongradError } from "./errors.ts";
import { contiguousStrides, numel, type Shape } from "./shape.ts";
import { Storage } from "./storage.ts";
import { readback } from "./runtime.ts";
import { checkAllocation } from "./limits.ts";
import { type BackwardOptions, type GradNode, releaseNode, runBackward } from "./autograd.ts";
import { trackTensor, untrackTensor } from "./scope.ts";

/**
 * Nested arrays returned by `toArray()`: a number for a scalar, else arrays of rank depth.
 *
 * @example toArray() nests like the shape
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const rows: mg.NestedArray = await mg.arange(4).reshape([2, 2]).toArray();
 * console.log(rows); // [[0, 1], [2, 3]]
 * console.log(await mg.tensor(7).toArray()); // 7
 * ```
 */
export type NestedArray = number | NestedArray[];

/**
 * A scalar operand accepted wherever a tensor operand broadcasts.
 *
 * @example Numbers broadcast like tensors
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const scale: mg.Operand = 0.5;
 * console.log(await mg.mul(mg.tensor([2, 4]), scale).toArray()); // [1, 2]
 * ```
 */
export type Operand = Tensor | number;

let liveTensors = 0;
let nextTensorId = 1;

/** Number of tensor handles not yet disposed. */
export function liveTensorCount(): number {
  return liveTensors;
}

/**
 * Options of `variance`.
 *
 * @example Population variance instead of the unbiased one
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.VarOptions = { correction: 0 };
 * console.log(await mg.variance(mg.tensor([1, 2, 3, 4]), undefined, opts).item()); // 1.25
 * ```
 */
export interface VarOptions {
  /** Subtracted from the count in the denominator: 1 (default, unbiased) or 0 (population). */
  correction?: number;
  /** Keep reduced axes as size 1. */
  keepDims?: boolean;
}

/**
 * The Tensor methods that run kernels. Their implementations live in the ops layer, which
 * installs them with `installTensorOps` (ops/tensor_methods.ts, loaded by every entry module),
 * so core imports nothing from ops: core alone can allocate, upload and read back tensors.
 */
// deno-fmt-ignore
const TENSOR_METHOD_OPS = [
  "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
  "neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "silu", "gelu",
  "relu", "clamp", "square", "cast", "contiguous", "sum", "mean", "max", "min", "argmax", "var",
  "softmax", "logSoftmax", "matmul", "reshape", "permute", "transpose", "slice", "expand",
  "unsqueeze", "squeeze", "flatten", "split", "indexSelect", "gather", "topk",
] as const;

type MethodOps = {
  [K in (typeof TENSOR_METHOD_OPS)[number]]: (
    self: Tensor,
    ...args: Parameters<Tensor[K]>
  ) => ReturnType<Tensor[K]>;
};

/**
 * What the ops layer installs: one function per method of `TENSOR_METHOD_OPS` (the tensor
 * first, then the method's arguments) plus the helpers `data`, `backward`, `detach` and `assign`
 * need.
 */
export interface TensorOps extends MethodOps {
  /** A tensor of ones with `x`'s shape and dtype (the seed gradient of backward). */
  onesLike(x: Tensor): Tensor;
  /** A new handle on `x`'s data, cut from the graph. */
  alias(x: Tensor): Tensor;
  /** Copies `src`'s elements into `dst` (same shape and dtype), not recorded by autograd. */
  copyInto(src: Tensor, dst: Tensor): void;
}

const OPS_NAMES = [...TENSOR_METHOD_OPS, "onesLike", "alias", "copyInto"] as const;

function notInstalled(): TensorOps {
  const stubs: Record<string, () => never> = {};
  for (const name of OPS_NAMES) {
    stubs[name] = () => {
      throw new MoongradError(
        `Tensor.${name}`,
        "the ops layer is not loaded: import mod.ts (or ops/tensor_methods.ts) before calling " +
          "tensor methods that run kernels",
      );
    };
  }
  return stubs as unknown as TensorOps;
}

let impl: TensorOps = notInstalled();

/** Installs the ops layer's implementations of the Tensor methods (ops/tensor_methods.ts). */
export function installTensorOps(ops: TensorOps): void {
  const missing = OPS_NAMES.filter((n) => typeof ops[n] !== "function");
  if (missing.length) {
    throw new MoongradError("installTensorOps", `missing implementations: ${missing.join(", ")}`);
  }
  impl = ops;
}

/**
 * An n-dimensional array on the GPU. A tensor is a view (shape, strides, offset) of a
 * reference-counted storage buffer; several views may share one storage.
 *
 * @example Create, compute, differentiate, read back
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2], [3, 4]]);
 * const w = mg.randn([2, 3], { seed: 1, requiresGrad: true });
 * const loss = x.matmul(w).silu().sum();
 * loss.backward();
 * console.log(w.grad!.shape, await loss.item() !== 0); // [2, 3] true
 * using t = mg.ones([2]); // disposed at the end of the block
 * console.log(t.toString()); // Tensor(f32 [2])
 * ```
 */
export class Tensor {
  /** Unique id of this handle. */
  readonly id: number = nextTensorId++;
  /** Size of each axis. */
  readonly shape: readonly number[];
  /** Element stride of each axis in the storage. */
  readonly strides: readonly number[];
  /** Offset of the first element in the storage, in elements. */
  readonly offset: number;
  /** Element type. */
  readonly dtype: DType;
  /** True when backward should compute a gradient for this tensor. */
  requiresGrad = false;
  /** Accumulated gradient after `backward()`, or null. */
  grad: Tensor | null = null;
  /** The recorded op that produced this tensor (null for leaves). */
  gradFn: GradNode | null = null;
  #storage: Storage | null;

  /** Wraps a storage as a tensor view. Prefer the creation functions (`mg.tensor`, `mg.zeros`). */
  constructor(
    storage: Storage,
    shape: Shape,
    dtype: DType,
    strides: Shape = contiguousStrides(shape),
    offset = 0,
  ) {
    this.#storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.offset = offset;
    this.dtype = dtype;
    liveTensors++;
    trackTensor(this);
  }

  /**
   * Allocates a new contiguous tensor with uninitialised contents, after checking it against
   * the device's limits (core/limits.ts): too large is a MoongradError naming `op` (default:
   * the calling op, from the stack) and the shape.
   */
  static empty(shape: Shape, dtype: DType, op?: string): Tensor {
    checkAllocation(shape, dtype, op);
    return new Tensor(new Storage(Math.max(numel(shape), 1) * byteSize(dtype)), shape, dtype);
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }
  /** Number of axes. */
  get rank(): number {
    return this.shape.length;
  }
  /** True when the elements are laid out row-major without gaps (offset may be non-zero). */
  get isContiguous(): boolean {
    let s = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== s) return false;
      s *= this.shape[i];
    }
    return true;
  }
  /** True once `dispose()` has run. */
  get isDisposed(): boolean {
    return this.#storage === null;
  }

  /** The storage; throws a clear error after dispose. */
  storage(op = "use"): Storage {
    if (!this.#storage) {
      throw new MoongradError(op, `tensor ${fmtShape(this.shape)} ${this.dtype} was disposed`);
    }
    return this.#storage;
  }

  /** A new handle on the same storage with another shape/strides/offset (no copy). */
  view(shape: Shape, strides: Shape, offset: number): Tensor {
    return new Tensor(this.storage("view").retain(), shape, this.dtype, strides, offset);
  }

  /** A handle that keeps this tensor's storage alive for a backward pass, outside any scope. */
  retainForBackward(): Tensor {
    const t = this.view(this.shape, this.strides, this.offset);
    untrackTensor(t);
    return t;
  }

  /**
   * Frees this handle and its accumulated `.grad` (as a scope does to a leaf it created); the
   * storage returns to the pool when no view uses it. Idempotent.
   */
  dispose(): void {
    if (!this.#storage) return;
    this.grad?.dispose();
    this.grad = null;
    this.#storage.releaseRef();
    this.#storage = null;
    liveTensors--;
    untrackTensor(this);
    if (this.gradFn) releaseNode(this.gradFn);
  }

  /** `using t = ...` support: disposes at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Removes this tensor from the enclosing `scope()`s so it survives them. Returns it. */
  keep(): this {
    untrackTensor(this);
    return this;
  }

  /** Same as keep(), used by autograd for gradients that escape a scope. */
  untrack(): void {
    untrackTensor(this);
  }

  /** Reads the elements back, row-major: Float32Array (f32, f16), Int32Array or Uint8Array (bool). */
  async data(): Promise<TensorData> {
    this.storage("data");
    const n = this.size;
    if (n === 0) return decode(this.dtype, new ArrayBuffer(0), 0);
    const src = this.isContiguous ? this : impl.contiguous(this);
    try {
      const bs = byteSize(this.dtype);
      const bytes = await readback("data", src.storage("data").buf, src.offset * bs, n * bs);
      return decode(this.dtype, bytes, n);
    } finally {
      if (src !== this) src.dispose();
    }
  }

  /** Reads the elements back as nested arrays (a number for a scalar). */
  async toArray(): Promise<NestedArray> {
    const flat = Array.from(await this.data());
    const build = (axis: number, start: number): NestedArray => {
      if (axis === this.shape.length) return flat[start];
      const out: NestedArray[] = [];
      const step = numel(this.shape.slice(axis + 1));
      for (let i = 0; i < this.shape[axis]; i++) out.push(build(axis + 1, start + i * step));
      return out;
    };
    return build(0, 0);
  }

  /** Reads a one-element tensor back as a number. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new MoongradError(
        "item",
        `item() needs a tensor with one element, got shape ${fmtShape(this.shape)}`,
      );
    }
    return (await this.data())[0];
  }

  /** Marks this leaf tensor as requiring a gradient. Returns it. */
  requiresGrad_(value = true): this {
    if (value && this.dtype !== "f32" && this.dtype !== "f16") {
      throw new MoongradError(
        "requiresGrad_",
        `only floating-point tensors can require grad, got ${this.dtype}`,
      );
    }
    this.requiresGrad = value;
    return this;
  }

  /** Runs reverse-mode autograd from this tensor (a scalar unless `grad` is given). */
  backward(grad?: Tensor, options?: BackwardOptions): void {
    runBackward(this, grad, impl.onesLike, impl.add, impl.alias, options);
  }

  /** A tensor sharing this one's data that is cut from the graph. */
  detach(): Tensor {
    return impl.alias(this);
  }

  /**
   * Overwrites this tensor's elements with `value`'s (same shape and dtype), in place, on the
   * GPU. Not recorded by autograd: use it for parameter updates. Returns this.
   */
  assign(value: Tensor): this {
    impl.copyInto(value, this);
    return this;
  }

  /** Frees and clears `.grad`. */
  zeroGrad(): void {
    this.grad?.dispose();
    this.grad = null;
  }

  /** Short description: `Tensor(f32 [2, 3])`. */
  toString(): string {
    return `Tensor(${this.dtype} ${fmtShape(this.shape)}${
      this.requiresGrad ? " requiresGrad" : ""
    })`;
  }

  // ---- elementwise ------------------------------------------------------------------------
  /** this + other (broadcasting). */
  add(other: Operand): Tensor {
    return impl.add(this, other);
  }
  /** this − other (broadcasting). */
  sub(other: Operand): Tensor {
    return impl.sub(this, other);
  }
  /** this × other (broadcasting). */
  mul(other: Operand): Tensor {
    return impl.mul(this, other);
  }
  /** this ÷ other (broadcasting). */
  div(other: Operand): Tensor {
    return impl.div(this, other);
  }
  /** this ** other (broadcasting). */
  pow(other: Operand): Tensor {
    return impl.pow(this, other);
  }
  /** Elementwise maximum. */
  maximum(other: Operand): Tensor {
    return impl.maximum(this, other);
  }
  /** Elementwise minimum. */
  minimum(other: Operand): Tensor {
    return impl.minimum(this, other);
  }
  /** this == other, as bool. */
  eq(other: Operand): Tensor {
    return impl.eq(this, other);
  }
  /** this != other, as bool. */
  ne(other: Operand): Tensor {
    return impl.ne(this, other);
  }
  /** this < other, as bool. */
  lt(other: Operand): Tensor {
    return impl.lt(this, other);
  }
  /** this <= other, as bool. */
  le(other: Operand): Tensor {
    return impl.le(this, other);
  }
  /** this > other, as bool. */
  gt(other: Operand): Tensor {
    return impl.gt(this, other);
  }
  /** this >= other, as bool. */
  ge(other: Operand): Tensor {
    return impl.ge(this, other);
  }
  /** −this. */
  neg(): Tensor {
    return impl.neg(this);
  }
  /** |this|. */
  abs(): Tensor {
    return impl.abs(this);
  }
  /** e^this. */
  exp(): Tensor {
    return impl.exp(this);
  }
  /** Natural logarithm. */
  log(): Tensor {
    return impl.log(this);
  }
  /** Square root. */
  sqrt(): Tensor {
    return impl.sqrt(this);
  }
  /** 1 / sqrt(this). */
  rsqrt(): Tensor {
    return impl.rsqrt(this);
  }
  /** Sine. */
  sin(): Tensor {
    return impl.sin(this);
  }
  /** Cosine. */
  cos(): Tensor {
    return impl.cos(this);
  }
  /** Hyperbolic tangent. */
  tanh(): Tensor {
    return impl.tanh(this);
  }
  /** Logistic sigmoid. */
  sigmoid(): Tensor {
    return impl.sigmoid(this);
  }
  /** x · sigmoid(x). */
  silu(): Tensor {
    return impl.silu(this);
  }
  /** GELU (exact erf form by default, or the tanh approximation). */
  gelu(approximate: "none" | "tanh" = "none"): Tensor {
    return impl.gelu(this, approximate);
  }
  /** max(x, 0); NaN stays NaN. */
  relu(): Tensor {
    return impl.relu(this);
  }
  /** Limits values to [min, max] (either may be omitted); NaN stays NaN. */
  clamp(min?: number, max?: number): Tensor {
    return impl.clamp(this, min, max);
  }
  /** x². */
  square(): Tensor {
    return impl.square(this);
  }
  /** Converts to another dtype (a copy). */
  cast(dtype: DType): Tensor {
    return impl.cast(this, dtype);
  }
  /** A contiguous copy, or this tensor's data in a new handle when already contiguous. */
  contiguous(): Tensor {
    return impl.contiguous(this);
  }

  // ---- reductions -------------------------------------------------------------------------
  /** Sum over `axes` (all when omitted). */
  sum(axes?: number | number[], keepDims = false): Tensor {
    return impl.sum(this, axes, keepDims);
  }
  /** Mean over `axes` (all when omitted). */
  mean(axes?: number | number[], keepDims = false): Tensor {
    return impl.mean(this, axes, keepDims);
  }
  /** Maximum over `axes` (all when omitted). */
  max(axes?: number | number[], keepDims = false): Tensor {
    return impl.max(this, axes, keepDims);
  }
  /** Minimum over `axes` (all when omitted). */
  min(axes?: number | number[], keepDims = false): Tensor {
    return impl.min(this, axes, keepDims);
  }
  /** Index (i32) of the maximum along `axis` (over the flattened tensor when omitted). */
  argmax(axis?: number, keepDims = false): Tensor {
    return impl.argmax(this, axis, keepDims);
  }
  /** Variance over `axes` with Bessel's correction (correction = 1) unless told otherwise. */
  var(axes?: number | number[], options: VarOptions = {}): Tensor {
    return impl.var(this, axes, options);
  }
  /** Softmax along `axis` (last by default). */
  softmax(axis = -1): Tensor {
    return impl.softmax(this, axis);
  }
  /** Log-softmax along `axis` (last by default). */
  logSoftmax(axis = -1): Tensor {
    return impl.logSoftmax(this, axis);
  }

  // ---- matmul -----------------------------------------------------------------------------
  /** Matrix product with batch broadcasting (1-D operands as in NumPy). */
  matmul(other: Tensor): Tensor {
    return impl.matmul(this, other);
  }

  // ---- layout -----------------------------------------------------------------------------
  /** Same data, new shape (a view when contiguous); one axis may be −1. */
  reshape(shape: readonly number[]): Tensor {
    return impl.reshape(this, shape);
  }
  /** Reorders axes (a view). */
  permute(axes: readonly number[]): Tensor {
    return impl.permute(this, axes);
  }
  /** Swaps two axes (a view); the last two by default. */
  transpose(a = -2, b = -1): Tensor {
    return impl.transpose(this, a, b);
  }
  /** Elements `start..end` (exclusive) with `step` along `axis` (a view). */
  slice(axis: number, start: number, end?: number, step = 1): Tensor {
    return impl.slice(this, axis, start, end, step);
  }
  /** Broadcasts to `shape` (a view with zero strides). */
  expand(shape: readonly number[]): Tensor {
    return impl.expand(this, shape);
  }
  /** Inserts a size-1 axis at `axis` (a view). */
  unsqueeze(axis: number): Tensor {
    return impl.unsqueeze(this, axis);
  }
  /** Removes size-1 axes (all, or the given one) (a view). */
  squeeze(axis?: number): Tensor {
    return impl.squeeze(this, axis);
  }
  /** Flattens to 1-D. */
  flatten(): Tensor {
    return impl.flatten(this);
  }
  /** Splits along `axis`: a number is a piece size (the last may be smaller, like torch.split), an array lists the sizes (views). */
  split(sizesOrSections: number | readonly number[], axis = 0): Tensor[] {
    return impl.split(this, sizesOrSections, axis);
  }

  // ---- indexing ---------------------------------------------------------------------------
  /** Selects entries of `axis` at the i32 positions of a 1-D `index`. */
  indexSelect(axis: number, index: Tensor): Tensor {
    return impl.indexSelect(this, axis, index);
  }
  /** PyTorch-style gather: out[...i...] = this[...index[...i...]...] along `axis`. */
  gather(axis: number, index: Tensor): Tensor {
    return impl.gather(this, axis, index);
  }
  /** The k largest entries along the last axis: values and i32 indices, largest first. */
  topk(k: number): { values: Tensor; indices: Tensor } {
    return impl.topk(this, k);
  }
}
