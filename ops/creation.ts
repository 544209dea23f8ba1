/** Creating tensors: from JS data, constants, ranges, and seeded GPU random numbers. */
import { deviceInfo } from "../core/device.ts";
import { checkDType, checkHostValues, type DType, encode, isFloat } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch, upload } from "../core/runtime.ts";
import { checkShape, numel } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { fillInPlace } from "./copy.ts";
import { grid1d, linearId } from "./grid.ts";
import { TRIG_WGSL } from "./wgsl_trig.ts";

/**
 * Options accepted by every creation function.
 *
 * @example A trainable parameter, an index tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.CreateOptions = { requiresGrad: true };
 * const w = mg.zeros([3, 3], opts);
 * const ids = mg.tensor([0, 2], { dtype: "i32" });
 * console.log(w.requiresGrad, ids.dtype); // true i32
 * ```
 */
export interface CreateOptions {
  /** Element type (default "f32"; "i32" for Int32Array data; "bool" for boolean data). */
  dtype?: DType;
  /** Marks the new tensor as a leaf that requires grad. */
  requiresGrad?: boolean;
}

/**
 * Nested JS arrays of numbers or booleans (a scalar is a number).
 *
 * @example Nested arrays, numbers and booleans
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const data: mg.NestedNumbers = [[true, false], [false, true]];
 * console.log(mg.tensor(data).dtype, mg.tensor(data).shape); // bool [2, 2]
 * ```
 */
export type NestedNumbers = number | boolean | readonly NestedNumbers[];

function finish(t: Tensor, options: CreateOptions): Tensor {
  if (options.requiresGrad) t.requiresGrad_(true);
  return t;
}

/** Refuses `requiresGrad` on a non-float dtype before anything is allocated. */
function checkGrad(op: string, dtype: DType, options: CreateOptions): void {
  if (options.requiresGrad && !isFloat(dtype)) {
    throw new MoongradError(
      op,
      `requiresGrad needs a floating-point dtype (f32 or f16), got ${dtype}`,
    );
  }
}

function fromBytes(
  shape: readonly number[],
  dtype: DType,
  bytes: Uint8Array<ArrayBuffer>,
  op: string,
): Tensor {
  const t = Tensor.empty(shape, dtype, op);
  if (bytes.byteLength > 0) upload(t.storage("tensor").buf, 0, bytes);
  return t;
}

function inferShape(data: NestedNumbers): number[] {
  const shape: number[] = [];
  let cur: NestedNumbers = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0] as NestedNumbers;
  }
  return shape;
}

function flatten(
  data: NestedNumbers,
  shape: number[],
  depth: number,
  out: number[],
  path: number[],
): void {
  if (depth === shape.length) {
    if (typeof data === "boolean") out.push(data ? 1 : 0);
    else if (typeof data === "number") out.push(data);
    else {
      throw new MoongradError(
        "tensor",
        `element at ${fmtShape(path)} is ${JSON.stringify(data)}; expected a number or boolean`,
      );
    }
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) {
    throw new MoongradError(
      "tensor",
      `ragged nested array: entry at ${fmtShape(path)} has length ${
        Array.isArray(data) ? data.length : "(not an array)"
      }, expected ${shape[depth]}`,
    );
  }
  data.forEach((d, i) => flatten(d, shape, depth + 1, out, [...path, i]));
}

/**
 * A tensor from nested arrays, a number, or a flat typed array with `shape`.
 * `mg.tensor([[1, 2], [3, 4]])`, `mg.tensor(new Float32Array(6), { shape: [2, 3] })`.
 *
 * @example From nested arrays, a number, or a typed array with a shape
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([[1, 2], [3, 4]]); // f32 [2, 2]
 * const s = mg.tensor(3.5); // a scalar, shape []
 * const b = mg.tensor(new Int32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }); // i32 [2, 3]
 * console.log(a.shape, s.shape, b.dtype, b.shape); // [2, 2] [] i32 [2, 3]
 * ```
 */
export function tensor(
  data: NestedNumbers | Float32Array | Int32Array | Uint8Array,
  options: CreateOptions & { shape?: readonly number[] } = {},
): Tensor {
  let values: ArrayLike<number>;
  let shape: number[];
  let dtype: DType | undefined = options.dtype === undefined
    ? undefined
    : checkDType("tensor", options.dtype);
  if (ArrayBuffer.isView(data)) {
    values = data;
    shape = options.shape ? checkShape("tensor", options.shape) : [data.length];
    dtype ??= data instanceof Int32Array ? "i32" : data instanceof Uint8Array ? "bool" : "f32";
  } else {
    shape = inferShape(data);
    const flat: number[] = [];
    flatten(data, shape, 0, flat, []);
    values = flat;
    if (options.shape) {
      const s = checkShape("tensor", options.shape);
      if (numel(s) !== flat.length) {
        throw new MoongradError(
          "tensor",
          `shape ${fmtShape(s)} needs ${numel(s)} values, got ${flat.length}`,
        );
      }
      shape = s;
    }
    dtype ??= isBooleanData(data) ? "bool" : "f32";
  }
  if (numel(shape) !== values.length) {
    throw new MoongradError(
      "tensor",
      `shape ${fmtShape(shape)} needs ${numel(shape)} values, got ${values.length}`,
    );
  }
  if (dtype === "f16") requireF16("tensor");
  checkGrad("tensor", dtype, options);
  checkHostValues("tensor", dtype, values);
  return finish(fromBytes(shape, dtype, encode(dtype, values), "tensor"), options);
}

function isBooleanData(data: NestedNumbers): boolean {
  let cur: NestedNumbers = data;
  while (Array.isArray(cur)) cur = cur[0] as NestedNumbers;
  return typeof cur === "boolean";
}

function requireF16(op: string): void {
  if (!deviceInfo().f16) {
    throw new MoongradError(
      op,
      "dtype f16 needs an adapter with the shader-f16 feature; this one has none",
    );
  }
}

/**
 * A tensor of `shape` filled with `value`.
 *
 * @example A constant tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.full([2, 2], -1).toArray()); // [[-1, -1], [-1, -1]]
 * ```
 */
export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  return fullAs("full", shape, value, options);
}

function fullAs(
  op: string,
  shape: readonly number[],
  value: number,
  options: CreateOptions,
): Tensor {
  const s = checkShape(op, shape);
  const dtype = checkDType(op, options.dtype ?? "f32");
  if (dtype === "f16") requireF16(op);
  if (typeof value !== "number") {
    throw new MoongradError(op, `value must be a number, got ${typeof value}`);
  }
  checkGrad(op, dtype, options);
  checkHostValues(op, dtype, [value]);
  const t = Tensor.empty(s, dtype, op);
  fillInPlace(t, value);
  return finish(t, options);
}

/**
 * A tensor of zeros.
 *
 * @example Zeros, e.g. an optimizer buffer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const m = mg.zeros([2, 3]);
 * console.log(m.shape, await m.sum().item()); // [2, 3] 0
 * ```
 */
export function zeros(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return fullAs("zeros", shape, 0, options);
}

/**
 * A tensor of ones.
 *
 * @example Ones
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.ones([3], { dtype: "i32" }).toArray()); // [1, 1, 1]
 * ```
 */
export function ones(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return fullAs("ones", shape, 1, options);
}

/**
 * Zeros with the shape and dtype of `x`.
 *
 * @example Zeros shaped like another tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2, 3]]);
 * console.log(await mg.zerosLike(x).toArray()); // [[0, 0, 0]]
 * ```
 */
export function zerosLike(x: Tensor): Tensor {
  return full(x.shape, 0, { dtype: x.dtype });
}

/**
 * Ones with the shape and dtype of `x`.
 *
 * @example Ones shaped like another tensor (the seed gradient of backward)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([1, 2], { requiresGrad: true });
 * const y = x.mul(x);
 * y.backward(mg.onesLike(y)); // a non-scalar output needs its gradient
 * console.log(await x.grad!.toArray()); // [2, 4]
 * ```
 */
export function onesLike(x: Tensor): Tensor {
  return full(x.shape, 1, { dtype: x.dtype });
}

/**
 * Values start, start+step, … below `stop` (NumPy's arange); `arange(n)` is 0..n−1.
 *
 * @example Ranges, float or integer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.arange(4).toArray()); // [0, 1, 2, 3]
 * console.log(await mg.arange(1, 2, 0.25).toArray()); // [1, 1.25, 1.5, 1.75]
 * console.log(await mg.arange(0, 6, 2, { dtype: "i32" }).toArray()); // [0, 2, 4]
 * ```
 */
export function arange(
  start: number,
  stop?: number,
  step = 1,
  options: CreateOptions = {},
): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (![start, stop, step].every(Number.isFinite) || step === 0) {
    throw new MoongradError(
      "arange",
      `start ${start}, stop ${stop}, step ${step} must be finite with step != 0`,
    );
  }
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const dtype = checkDType("arange", options.dtype ?? "f32");
  if (dtype === "f16") requireF16("arange");
  const values = Array.from({ length: n }, (_, i) => start + i * step);
  checkGrad("arange", dtype, options);
  checkHostValues("arange", dtype, values);
  return finish(fromBytes([n], dtype, encode(dtype, values), "arange"), options);
}

// ---- random numbers ---------------------------------------------------------------------

let globalSeed = 0x5eed;
let globalStream = 1;

/**
 * Sets the seed of the global generator used when `seed` is not given.
 *
 * @example Reproducible random numbers without passing seeds
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * mg.manualSeed(42);
 * const a = await mg.randn([3]).toArray();
 * mg.manualSeed(42);
 * const b = await mg.randn([3]).toArray();
 * console.log(JSON.stringify(a) === JSON.stringify(b)); // true
 * ```
 */
export function manualSeed(seed: number): void {
  globalSeed = seed >>> 0;
  globalStream = 1;
}

/**
 * Options of `rand` / `randn`.
 *
 * @example Same seed, same numbers
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.RandomOptions = { seed: 7 };
 * const a = await mg.rand([4], opts).toArray();
 * const b = await mg.rand([4], opts).toArray();
 * console.log(JSON.stringify(a) === JSON.stringify(b)); // true
 * ```
 */
export interface RandomOptions extends CreateOptions {
  /** Same seed, same numbers (counter-based Philox4x32-10 on the GPU). */
  seed?: number;
}

const PHILOX_WGSL = `
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu; let ah = a >> 16u; let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl; let hh = ah * bh;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
  return vec2<u32>(a * b, hi);
}
fn philox(counter: vec4<u32>, key0: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key0;
  for (var r = 0; r < 10; r++) {
    let p0 = mulhilo(0xD2511F53u, c.x);
    let p1 = mulhilo(0xCD9E8D57u, c.z);
    c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}
fn unit(x: u32) -> f32 { return f32(x >> 8u) * 5.9604644775390625e-8; }
// 11 random bits: every value (at most 1 − 2⁻¹¹) is exact in f16, so f16 rand stays below 1.
fn unit16(x: u32) -> f32 { return f32(x >> 21u) * 4.8828125e-4; }`;

/** Random kernels: element count, Philox key (seed split in 32-bit halves) and stream, a + b·x. */
const RANDOM_DECL = {
  n: "u32",
  seedLo: "u32",
  seedHi: "u32",
  stream: "u32",
  a: "f32",
  b: "f32",
} as const;
const RANDOM_PARAMS = { rand: params("rand", RANDOM_DECL), randn: params("randn", RANDOM_DECL) };

function random(
  op: "rand" | "randn",
  shape: readonly number[],
  options: RandomOptions,
  a: number,
  b: number,
): Tensor {
  const s = checkShape(op, shape);
  const dtype = checkDType(op, options.dtype ?? "f32");
  if (dtype !== "f32" && dtype !== "f16") {
    throw new MoongradError(op, `dtype must be f32 or f16, got ${dtype}`);
  }
  if (dtype === "f16") requireF16(op);
  checkGrad(op, dtype, options);
  let seed: number;
  let stream: number;
  if (options.seed === undefined) {
    seed = globalSeed;
    stream = globalStream++;
  } else {
    if (!Number.isInteger(options.seed)) {
      throw new MoongradError(op, `seed must be an integer, got ${options.seed}`);
    }
    seed = options.seed;
    stream = 0;
  }
  const t = Tensor.empty(s, dtype, op);
  const n = t.size;
  if (n > 0) {
    const P = RANDOM_PARAMS[op];
    const words = P.pack({
      n,
      seedLo: seed >>> 0,
      seedHi: Math.floor(seed / 2 ** 32) >>> 0,
      stream,
      a,
      b,
    });
    const value = op === "rand"
      ? `p_a() + p_b() * ${dtype === "f16" ? "unit16" : "unit"}(r.x)`
      : "p_a() + p_b() * sqrt(-2.0 * log(unit(r.x) + 5.9604644775390625e-8)) * mg_cos(6.283185307179586 * unit(r.y))";
    const k = kernel({
      name: op,
      bindings: [{ name: "out", type: dtype, access: "read_write" }],
      workgroupSize: [256],
      params: P,
      prelude: PHILOX_WGSL + TRIG_WGSL,
      body: `
  let i = ${linearId(256)};
  if (i >= p_n()) { return; }
  let r = philox(vec4<u32>(i, p_stream(), 0u, 0u), vec2<u32>(p_seedLo(), p_seedHi()));
  out[i] = ${dtype}(${value});`,
    });
    dispatch(k, [t.storage(op).buf], words, grid1d(n, 256));
  }
  return finish(t, options);
}

/**
 * Uniform numbers in [low, high) (default [0, 1)).
 *
 * @example Uniform numbers in a range
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const u = mg.rand([1000], { low: -1, high: 1, seed: 0 });
 * console.log((await u.min().item()) >= -1, (await u.max().item()) < 1); // true true
 * ```
 */
export function rand(
  shape: readonly number[],
  options: RandomOptions & { low?: number; high?: number } = {},
): Tensor {
  const low = options.low ?? 0;
  return random("rand", shape, options, low, (options.high ?? 1) - low);
}

/**
 * Normal numbers with `mean` (default 0) and `std` (default 1), by Box–Muller.
 *
 * @example Normal initialisation of a weight
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const w = mg.randn([256, 64], { std: 0.02, seed: 1, requiresGrad: true });
 * console.log(w.shape, Math.abs(await w.mean().item()) < 0.01); // [256, 64] true
 * ```
 */
export function randn(
  shape: readonly number[],
  options: RandomOptions & { mean?: number; std?: number } = {},
): Tensor {
  return random("randn", shape, options, options.mean ?? 0, options.std ?? 1);
}
