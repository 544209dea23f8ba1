/**
 * Rotary position embedding for attention: the frequency tables of HF's rope types ("default"
 * and "yarn", `rotaryFrequencies`), the softmax-scale correction DeepseekV3Attention applies
 * under YaRN (`softmaxScaleFactor`), and a `RotaryEmbedding` module that uploads its table once
 * and rotates in either pair layout (ops/rope.ts).
 *
 * YaRN (arXiv 2309.00071) as transformers' `_compute_yarn_parameters` computes it (the
 * mscale-aware form of transformers ≥ 4.5x and 5.x), with dim = qk_rope_head_dim, θ, factor s,
 * L = original_max_position_embeddings:
 * - correction dims: cd(β) = dim·ln(L / (2π·β)) / (2·ln θ); low = cd(beta_fast),
 *   high = cd(beta_slow), floored / ceiled when `truncate` (default), then low = max(low, 0),
 *   high = min(high, dim − 1); if low == high, high += 0.001;
 * - ramp_i = clamp((i − low) / (high − low), 0, 1) for i < dim/2, and with
 *   e_i = 1 − ramp_i: inv_freq_i = θ^(−2i/dim)/s · (1 − e_i) + θ^(−2i/dim) · e_i
 *   (dimensions below the ramp keep their frequency, those above are interpolated by s);
 * - attention factor f (multiplies cos and sin): `attention_factor` if given, else
 *   m(s, mscale) / m(s, mscale_all_dim) when both mscales are non-zero, else m(s, 1), where
 *   m(s, μ) = 0.1·μ·ln s + 1 for s > 1 and 1 otherwise;
 * - DeepseekV3Attention multiplies its softmax scale d_qk^−0.5 by m(s, mscale_all_dim)² when
 *   mscale_all_dim is non-zero (transformers 4.x: whenever `rope_scaling` is set; 5.x:
 *   whenever rope_type is not "default"; the same for the two types moongrad reads).
 * For Kimi K2 (s 32, mscale = mscale_all_dim = 1) that gives f = 1 and a softmax scale
 * × 1.8133; for DeepSeek-V3 (s 40) f = 1 and × 1.8739.
 *
 * Precision: transformers computes the table in f32 arithmetic; here every step is float64
 * and the result is rounded to f32 once, so each entry is the correctly rounded value of the
 * formula. On Kimi K2's and DeepSeek-V3's parameters it equals HF's f32 table to 1 ulp
 * (tests/yarn_test.ts holds HF's table computed with PyTorch f32 and checks the ulp distance).
 */
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { tensor } from "../ops/creation.ts";
import { rope, ropeConcat, ropeInvFreq, type RopeOptions } from "../ops/rope.ts";
import { ropeInsertShared, ropeTail } from "../ops/rope_mla.ts";
import type { RopeParameters, YarnRope } from "./config.ts";
import { ropeProblems } from "./config.ts";
import { Module } from "./module.ts";

export { ropeInvFreq };
export type { RopeOptions };

/**
 * YaRN's m(s, μ) (HF `yarn_get_mscale` / `get_mscale`): 0.1·μ·ln(s) + 1 for s > 1, else 1.
 * @example
 * ```ts
 * yarnGetMscale(32, 1); // 1.3465735902799727
 * ```
 */
export function yarnGetMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/**
 * YaRN's correction range [low, high] in rotary dimensions (before the low == high guard):
 * cd(β) = dim·ln(L / (2π·β)) / (2·ln θ) for beta_fast and beta_slow, floored / ceiled when
 * `truncate`, clamped to low ≥ 0 and high ≤ dim − 1.
 * @example
 * ```ts
 * yarnCorrectionRange(64, makeConfig("kimi-k2").rope_parameters as YarnRope); // [19, 20]
 * ```
 */
export function yarnCorrectionRange(dim: number, y: YarnRope): [number, number] {
  const cd = (rotations: number) =>
    (dim * Math.log(y.original_max_position_embeddings / (rotations * 2 * Math.PI))) /
    (2 * Math.log(y.rope_theta));
  let low = cd(y.beta_fast);
  let high = cd(y.beta_slow);
  if (y.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  return [Math.max(low, 0), Math.min(high, dim - 1)];
}

/**
 * YaRN's cos/sin attention factor f (see the file header).
 *
 * @example The cos/sin factor of K2's YaRN
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const rope = mg.nn.makeConfig("kimi-k2").rope_parameters;
 * if (rope.rope_type === "yarn") console.log(mg.nn.yarnAttentionFactor(rope)); // 1 (mscale = mscale_all_dim)
 * ```
 */
export function yarnAttentionFactor(y: YarnRope): number {
  if (y.attention_factor !== null) return y.attention_factor;
  if (y.mscale && y.mscale_all_dim) {
    return yarnGetMscale(y.factor, y.mscale) / yarnGetMscale(y.factor, y.mscale_all_dim);
  }
  return yarnGetMscale(y.factor);
}

/**
 * The f32 inv_freq table [dim/2] and the cos/sin factor of a rope type.
 *
 * @example The inv_freq table of plain RoPE
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const f: mg.nn.RotaryFrequencies = mg.nn.rotaryFrequencies(8, { rope_type: "default", rope_theta: 10000 });
 * console.log(f.invFreq, f.attentionFactor); // Float32Array(4) [1, 0.1, 0.01, 0.001] 1 (to f32 precision)
 * ```
 */
export interface RotaryFrequencies {
  /** inv_freq_i, rounded to f32 from a float64 computation. */
  invFreq: Float32Array;
  /** Factor multiplying cos and sin (HF `attention_scaling`): 1 for "default". */
  attentionFactor: number;
}

function checkDim(op: string, dim: number): void {
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2 !== 0) {
    throw new MoongradError(op, `the rotary dim must be a positive even integer, got ${dim}`);
  }
}

/**
 * HF's rope init for `rope_parameters` (`_compute_default_rope_parameters` /
 * `_compute_yarn_parameters`) for a rotary size `dim` (qk_rope_head_dim): the inv_freq table
 * and the attention factor. Computed in float64, the table rounded to f32 once.
 * @example
 * ```ts
 * const { invFreq, attentionFactor } = rotaryFrequencies(64, makeConfig("kimi-k2").rope_parameters);
 * invFreq[0]; // 1 (beyond the ramp: unchanged)
 * invFreq[31]; // θ^(−62/64) / 32 (interpolated)
 * attentionFactor; // 1 (mscale = mscale_all_dim)
 * ```
 */
export function rotaryFrequencies(dim: number, rope: RopeParameters): RotaryFrequencies {
  return frequencies("rotaryFrequencies", dim, rope);
}

function frequencies(op: string, dim: number, rope: RopeParameters): RotaryFrequencies {
  checkDim(op, dim);
  const problems = ropeProblems(rope, null);
  if (problems.length) {
    throw new MoongradError(op, `invalid rope_parameters: ${problems.join("; ")}`);
  }
  if (rope.rope_type === "default") {
    return { invFreq: ropeInvFreq(dim, rope.rope_theta), attentionFactor: 1 };
  }
  const [low, high0] = yarnCorrectionRange(dim, rope);
  const high = low === high0 ? high0 + 0.001 : high0;
  const invFreq = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const extrapolation = Math.pow(rope.rope_theta, (-2 * i) / dim);
    const interpolation = extrapolation / rope.factor;
    const ramp = Math.min(Math.max((i - low) / (high - low), 0), 1);
    const keep = 1 - ramp; // HF's inv_freq_extrapolation_factor
    invFreq[i] = interpolation * (1 - keep) + extrapolation * keep;
  }
  return { invFreq, attentionFactor: yarnAttentionFactor(rope) };
}

/**
 * The multiplier HF `DeepseekV3Attention` applies to its softmax scale d_qk^−0.5:
 * m(factor, mscale_all_dim)² for YaRN with a non-zero mscale_all_dim, else 1.
 * @example
 * ```ts
 * softmaxScaleFactor(makeConfig("kimi-k2").rope_parameters); // 1.8132604...
 * softmaxScaleFactor({ rope_type: "default", rope_theta: 10000 }); // 1
 * ```
 */
export function softmaxScaleFactor(rope: RopeParameters): number {
  if (rope.rope_type !== "yarn" || !rope.mscale_all_dim) return 1;
  const m = yarnGetMscale(rope.factor, rope.mscale_all_dim);
  return m * m;
}

/**
 * Rotates pairs of the last axis of `x` [..., T, d] by p·θ^(−2i/d), p the position (offset + t
 * along the T axis, or an i32 tensor broadcasting to x's shape without its last axis):
 * interleaved pairs (x[2i], x[2i+1]) by default, half-split pairs (x[i], x[i + d/2]) with
 * `{ interleaved: false }`. Use it on q_rope per head ([B, H, T, d_r]) and on the shared
 * k_rope ([B, T, d_r]). Differentiable in x. See ops/rope.ts for precision and layout notes.
 * @example
 * ```ts
 * const k = mg.randn([2, 5, 8]); // [B, T, d_r]
 * const y = applyRope(k, 3, 10000); // positions 3..7
 * ```
 */
export function applyRope(
  x: Tensor,
  positions: number | Tensor,
  theta: number,
  options: RopeOptions = {},
): Tensor {
  return rope(x, positions, theta, options);
}

/**
 * Options of `RotaryEmbedding`.
 *
 * @example Half-split pairs and another base
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.RotaryEmbeddingOptions = { theta: 50000, interleaved: false };
 * const rot = new mg.nn.RotaryEmbedding(16, opts);
 * console.log(rot.forward(mg.randn([1, 4, 10, 16], { seed: 0 })).shape); // [1, 4, 10, 16]
 * ```
 */
export interface RotaryEmbeddingOptions {
  /** Base θ of plain RoPE (default 10000); ignored when `rope` is given. */
  theta?: number;
  /** A config's `rope_parameters` ("default" or "yarn"); overrides `theta`. */
  rope?: RopeParameters;
  /** Interleaved pairs (default true, HF `rope_interleave`) or half-split pairs (false). */
  interleaved?: boolean;
}

/**
 * Rotary embedding of size `dim` that uploads its f32 inv_freq table once (HF's
 * non-persistent `inv_freq` buffer: not in the state dict), for plain RoPE with base θ or for
 * a config's `rope_parameters` (YaRN included: its table and cos/sin attention factor).
 * Children of a module tree are disposed with it.
 * @example
 * ```ts
 * const cfg = makeConfig("kimi-k2");
 * const rot = new RotaryEmbedding(64, { rope: cfg.rope_parameters, interleaved: cfg.rope_interleave });
 * const q = rot.forward(mg.randn([1, 2, 4, 64]), 100000); // positions 100000..100003
 * ```
 */
export class RotaryEmbedding extends Module {
  /** Rotary size d (even). */
  readonly dim: number;
  /** Base θ (HF `rope_theta`). */
  readonly theta: number;
  /** The rotary parameters ("default" with θ when built from `theta`). */
  readonly ropeParameters: RopeParameters;
  /** Interleaved (true) or half-split (false) pairs. */
  readonly interleaved: boolean;
  /** Factor multiplying cos and sin (YaRN's attention factor; 1 for plain RoPE). */
  readonly attentionFactor: number;
  /** f32 [dim/2]: the inv_freq table. */
  readonly invFreq: Tensor;

  /** Creates the table (θ defaults to 10000). */
  constructor(dim: number, options: RotaryEmbeddingOptions = {}) {
    super();
    checkDim("RotaryEmbedding", dim);
    const interleaved = options.interleaved ?? true;
    if (typeof interleaved !== "boolean") {
      throw new MoongradError(
        "RotaryEmbedding",
        `options.interleaved must be a boolean, got ${interleaved}`,
      );
    }
    this.dim = dim;
    this.ropeParameters = options.rope ??
      { rope_type: "default", rope_theta: options.theta ?? 10000 };
    this.theta = this.ropeParameters.rope_theta;
    this.interleaved = interleaved;
    const f = frequencies("RotaryEmbedding", dim, this.ropeParameters);
    this.attentionFactor = f.attentionFactor;
    this.invFreq = tensor(f.invFreq).keep();
  }

  /** Rotates `x` [..., T, dim] at `positions` (an offset or an i32 tensor). */
  forward(x: Tensor, positions: number | Tensor = 0): Tensor {
    return rope(x, positions, this.invFreq, {
      interleaved: this.interleaved,
      attentionFactor: this.attentionFactor,
    });
  }

  /**
   * concat([pass, rotate(x)], -1) in one kernel (ops/rope.ts `ropeConcat`): pass [..., dp]
   * and x [..., T, dim] share their outer shape; the result is [..., T, dp + dim].
   */
  forwardConcat(pass: Tensor, x: Tensor, positions: number | Tensor = 0): Tensor {
    return ropeConcat(pass, x, positions, this.invFreq, {
      interleaved: this.interleaved,
      attentionFactor: this.attentionFactor,
    });
  }

  /**
   * concat([x[..., :dp], rotate(x[..., dp:])], -1) in one kernel (ops/rope_mla.ts `ropeTail`),
   * whose backward writes d(x) laid out like x: x [..., T, dp + dim] → [..., T, dp + dim].
   */
  forwardTail(x: Tensor, dp: number, positions: number | Tensor = 0): Tensor {
    return ropeTail(x, dp, positions, this.invFreq, {
      interleaved: this.interleaved,
      attentionFactor: this.attentionFactor,
    });
  }

  /**
   * [x[..., :at] | rotate(shared[..., start:]) | x[..., at:]] with the rotated block shared by
   * every head, in one kernel each way (ops/rope_mla.ts `ropeInsertShared`): x [..., H, T, W],
   * shared [..., T, start + dim] → [..., H, T, W + dim].
   */
  forwardInsertShared(
    x: Tensor,
    at: number,
    shared: Tensor,
    start: number,
    positions: number | Tensor = 0,
  ): Tensor {
    return ropeInsertShared(x, at, shared, start, positions, this.invFreq, {
      interleaved: this.interleaved,
      attentionFactor: this.attentionFactor,
    });
  }

  /** Frees the inv_freq table. */
  override dispose(): void {
    super.dispose();
    this.invFreq.dispose();
  }
}
