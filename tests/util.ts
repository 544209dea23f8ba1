/** Shared test helpers: one device per test process, closeness checks, fast-check shapes. */
// fast-check is pinned here, with a full npm: specifier, so that only the test graph reaches it
// (deno.json has no import map: `deno task` would install every mapped package first).
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@4.10.2";
import * as mg from "../mod.ts";
import { setDispatchProfiler } from "../core/runtime.ts";
import { NDArray } from "./reference/ndarray.ts";
import type { ViewCase } from "./reference/elementwise.ts";

let ready: Promise<mg.DeviceInfo> | null = null;

/** Initialises the device once per test file. */
export function gpu(): Promise<mg.DeviceInfo> {
  ready ??= mg.init();
  return ready;
}

/** Tolerance: |actual − expected| ≤ atol + rtol·|expected| elementwise. */
export interface Tolerance {
  rtol: number;
  atol: number;
}

/**
 * Asserts elementwise closeness and equal shapes; the message names the first bad index and
 * the worst error. NaN matches NaN and infinities must match exactly.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number> | NDArray,
  tol: Tolerance,
  what = "",
): void {
  const exp = expected instanceof NDArray ? expected.data : expected;
  if (actual.length !== exp.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${exp.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = exp[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a === e) continue;
      throw new Error(`${what}: index ${i}: got ${a}, expected ${e}`);
    }
    if (Math.abs(a - e) > tol.atol + tol.rtol * Math.abs(e)) {
      throw new Error(
        `${what}: index ${i}: got ${a}, expected ${e} (|diff| ${
          Math.abs(a - e)
        } > ${tol.atol} + ${tol.rtol}·|e|)`,
      );
    }
  }
}

/** Asserts a GPU tensor has the reference's shape and values within `tol`. */
export async function assertTensorClose(
  t: mg.Tensor,
  ref: NDArray,
  tol: Tolerance,
  what = "",
): Promise<void> {
  if (t.shape.length !== ref.shape.length || t.shape.some((d, i) => d !== ref.shape[i])) {
    throw new Error(`${what}: shape [${t.shape}] != expected [${ref.shape}]`);
  }
  assertClose(await t.data(), ref.data, tol, what);
}

/** Random shapes of rank 0..maxRank with sizes 1..maxDim (size-1 axes included). */
export function arbShape(maxRank = 4, maxDim = 7): fc.Arbitrary<number[]> {
  return fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: 0, maxLength: maxRank });
}

/** Two shapes that broadcast against each other (some axes set to 1, some dropped). */
export function arbBroadcastPair(maxRank = 4, maxDim = 6): fc.Arbitrary<[number[], number[]]> {
  return fc.tuple(
    arbShape(maxRank, maxDim),
    fc.array(fc.integer({ min: 0, max: 2 }), { minLength: maxRank, maxLength: maxRank }),
    fc.integer({ min: 0, max: maxRank }),
  ).map(([shape, modes, drop]) => {
    const other = shape.map((d, i) => (modes[i] === 1 ? 1 : d));
    const a = shape.map((d, i) => (modes[i] === 2 ? 1 : d));
    return [a, other.slice(Math.min(drop, other.length))];
  });
}

/** Smallest positive normal f32. */
export const F32_MIN_NORMAL = 2 ** -126;

/**
 * f32 rounding with subnormals flushed to a zero of the same sign. WebGPU lets
 * implementations flush subnormals (real GPUs and Dawn on SwiftShader do; lavapipe does
 * not), so random test inputs avoid them; `subnormal_test.ts` checks both behaviours.
 */
export function froundFtz(x: number): number {
  const f = Math.fround(x);
  return Math.abs(f) < F32_MIN_NORMAL ? (f < 0 || Object.is(f, -0) ? -0 : 0) : f;
}

/**
 * Random f32 values in [lo, hi] (subnormals flushed, see `froundFtz`) that are never all zero
 * (a nonzero value is forced at index 0).
 */
export function arbValues(n: number, lo = -3, hi = 3): fc.Arbitrary<number[]> {
  return fc.array(fc.double({ min: lo, max: hi, noNaN: true, noDefaultInfinity: true }), {
    minLength: n,
    maxLength: n,
  }).map((v) => {
    const out: number[] = v.map(froundFtz);
    if (n > 0 && !out.some((x) => x !== 0)) out[0] = 1.25;
    return out;
  });
}

/**
 * n f32 values: finite ones on a 1/64 grid in [lo, hi] (ties happen; no subnormals, which
 * SwiftShader flushes to zero), and NaN, +Inf or −Inf with probability `special` at each
 * position (NaN as often as both infinities together).
 */
export function arbSpecialValues(
  n: number,
  special = 0.25,
  lo = -3,
  hi = 3,
): fc.Arbitrary<number[]> {
  const finite = fc.integer({ min: Math.ceil(lo * 64), max: Math.floor(hi * 64) }).map((i) =>
    i / 64
  );
  const weight = Math.round(100 * special);
  const odd = fc.oneof(
    { weight: 2, arbitrary: fc.constant(NaN) },
    { weight: 1, arbitrary: fc.constant(Infinity) },
    { weight: 1, arbitrary: fc.constant(-Infinity) },
  );
  return fc.array(
    fc.oneof({ weight: 100 - weight, arbitrary: finite }, { weight, arbitrary: odd }),
    { minLength: n, maxLength: n },
  );
}

/**
 * How far a head's recomputed f32 max logit may sit from τ once QK-Clip scaled the head by γ
 * (`gamma` = 1 for heads it left alone): the clipped weights' f32 rounding (≤ 1e-6·γ·M, as the
 * γ-scaling checks) and the f32 error of the two forward passes that measured the logit before
 * and after (≤ 5e-7·γ·M each; measured ≤ 3e-8·M), where `magnitude` M = Σ|q·k|·scale is the
 * largest over the head's logits, plus 1e-5·τ. Relative to τ the margin grows with the logit's
 * cancellation M/τ: on SwiftShader a head whose max logit 0.0056 came from terms of magnitude
 * 0.75 (ratio 135), clipped to τ = 0.0024, landed 2.3e-5·τ above τ.
 *
 * @example
 * ```ts
 * import { clipLandingBound } from "./util.ts";
 * // τ = 0.0024, head scaled by γ = 0.43, its logits' largest Σ|q·k| = 0.75: ±6.7e-7.
 * const margin = clipLandingBound(0.0024, 0.43, 0.75);
 * ```
 */
export function clipLandingBound(tau: number, gamma: number, magnitude: number): number {
  return 1e-5 * tau + 2e-6 * gamma * magnitude;
}

/** Bits of f32 values, for exact comparison (NaN-safe, −0 ≠ +0). */
export function f32Bits(v: ArrayLike<number>): number[] {
  return Array.from(new Uint32Array(Float32Array.from(v).buffer));
}

/** A f32 tensor of `seededValues` in [−1, 1) shaped `shape`. */
export function seededTensor(shape: readonly number[], seed: number): mg.Tensor {
  return mg.tensor(seededValues(shape.reduce((a, b) => a * b, 1), seed), { shape: [...shape] });
}

/** Deterministic pseudo-random values in [lo, hi), for fixed-size tests. */
export function seededValues(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = lo + ((s >>> 0) / 2 ** 32) * (hi - lo);
  }
  return out;
}

/** Runs a fast-check async property with a run count sized for CPU adapters; prints the seed on failure. */
export async function check<T>(
  arb: fc.Arbitrary<T>,
  prop: (v: T) => Promise<void>,
  numRuns = 25,
): Promise<void> {
  await fc.assert(fc.asyncProperty(arb, prop), { numRuns, verbose: 1 });
}

export { fc };

/**
 * Runs `fn` expecting a MoongradError whose message includes every one of `parts`; returns
 * the error. Any other outcome (no error, another error type) fails.
 */
export function expectMgError(fn: () => unknown, ...parts: string[]): mg.MoongradError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected a MoongradError, got ${e}`);
    for (const p of parts) {
      if (!e.message.includes(p)) throw new Error(`error "${e.message}" does not mention "${p}"`);
    }
    return e;
  }
  throw new Error(
    `expected a MoongradError mentioning ${JSON.stringify(parts)}, nothing was thrown`,
  );
}

/** Like `expectMgError`, and the message must start with `moongrad.<op>:`. */
export function assertMgError(fn: () => unknown, op: string, ...parts: string[]): void {
  expectMgError(fn, `moongrad.${op}:`, ...parts);
}

/** Fails when GPU bytes in use differ from `before` (a leak or a double free). */
export function assertNoLeak(before: number, what: string): void {
  const now = mg.memory().inUseBytes;
  if (now !== before) throw new Error(`${what}: ${now - before} bytes still in use`);
}

/** Builds on the GPU the strided view a reference `ViewCase` describes, on top of `base`. */
export function applyView(c: ViewCase, base: mg.Tensor): mg.Tensor {
  const rev = c.shape.map((_, i) => c.shape.length - 1 - i);
  switch (c.kind) {
    case "plain":
      return base;
    case "transposed":
      return base.permute(rev);
    case "sliced":
      return base.slice(c.axis, 1, undefined, 2);
    case "expanded":
      return base.expand(c.shape);
  }
}

/** An f32 tensor from values with a shape. */
export function f32(values: ArrayLike<number>, shape: readonly number[], requiresGrad = false) {
  return mg.tensor(Float32Array.from(values), { shape, requiresGrad });
}

/** A kept leaf that requires grad (a parameter outside any module), from values and a shape. */
export function param(values: ArrayLike<number>, shape: readonly number[]): mg.Tensor {
  return f32(values, shape).keep().requiresGrad_();
}

/** Replaces `p.grad` with a tensor of these values (what backward would have left). */
export function setGrad(p: mg.Tensor, values: ArrayLike<number>): void {
  p.grad?.dispose();
  p.grad = f32(values, p.shape);
}

/**
 * Runs `run` once to warm caches, then three more times, and fails unless GPU bytes in use
 * and live tensors are unchanged (every temporary of a forward + backward was freed).
 */
export async function assertMemoryFlat(run: () => void): Promise<void> {
  run();
  await mg.sync();
  const before = mg.memory();
  for (let i = 0; i < 3; i++) run();
  await mg.sync();
  const after = mg.memory();
  if (after.inUseBytes !== before.inUseBytes || after.liveTensors !== before.liveTensors) {
    throw new Error(`leak: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  }
}

/**
 * A micro K2-style config (2 layers, 4 routed experts, tiny MLA) that fits a CPU adapter; the
 * model tests share it and state only what they change.
 */
export function microConfig(overrides: Partial<mg.nn.KimiConfig> = {}): mg.nn.KimiConfig {
  return mg.nn.makeConfig({
    vocab_size: 32,
    hidden_size: 24,
    intermediate_size: 48,
    moe_intermediate_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    n_routed_experts: 4,
    num_experts_per_tok: 2,
    kv_lora_rank: 8,
    q_lora_rank: 12,
    qk_nope_head_dim: 8,
    qk_rope_head_dim: 4,
    v_head_dim: 8,
    initializer_range: 0.2,
    ...overrides,
  });
}

/**
 * Per-kernel counts of `countDispatches` with co-launched pairs ("a+b", core/colaunch.ts)
 * counted once under each of their kernels' names.
 */
export function perKernel(launches: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, n] of launches) {
    for (const k of name.split("+")) out.set(k, (out.get(k) ?? 0) + n);
  }
  return out;
}

/** Runs `fn` and returns how many dispatches it recorded, per kernel name (profiler hook). */
export function countDispatches(fn: () => void): Map<string, number> {
  const counts = new Map<string, number>();
  setDispatchProfiler({
    dispatch: (k) => void counts.set(k, (counts.get(k) ?? 0) + 1),
    beforeSubmit: () => {},
    afterSubmit: () => {},
  });
  try {
    fn();
  } finally {
    setDispatchProfiler(null);
  }
  return counts;
}
