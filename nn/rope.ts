/** Rotary position embedding for attention (interleaved pairs, as in DeepSeek / Kimi weights). */
import type { Tensor } from "../core/tensor.ts";
import { tensor } from "../ops/creation.ts";
import { rope, ropeInvFreq } from "../ops/rope.ts";
import { Module } from "./module.ts";

export { ropeInvFreq };

/**
 * Rotates pairs (x[2i], x[2i+1]) of the last axis of `x` [..., T, d] by p·θ^(−2i/d), p the
 * position (offset + t along the T axis, or an i32 tensor broadcasting to x's shape without its
 * last axis). Use it on q_rope per head ([B, H, T, d_r]) and on the shared k_rope
 * ([B, T, d_r]). Differentiable in x. See ops/rope.ts for precision and layout notes.
 */
export function applyRope(x: Tensor, positions: number | Tensor, theta: number): Tensor {
  return rope(x, positions, theta);
}

/**
 * Rotary embedding of size `dim` with base `theta` that uploads its f32 inv_freq table once
 * (HF's non-persistent `inv_freq` buffer: not in the state dict). Children of a module tree
 * are disposed with it.
 */
export class RotaryEmbedding extends Module {
  /** Rotary size d (even). */
  readonly dim: number;
  /** Base θ (HF `rope_theta`). */
  readonly theta: number;
  /** f32 [dim/2]: θ^(−2i/d). */
  readonly invFreq: Tensor;

  /** Creates the table (θ defaults to 10000). */
  constructor(dim: number, options: { theta?: number } = {}) {
    super();
    this.dim = dim;
    this.theta = options.theta ?? 10000;
    this.invFreq = tensor(ropeInvFreq(dim, this.theta)).keep();
  }

  /** Rotates `x` [..., T, dim] at `positions` (an offset or an i32 tensor). */
  forward(x: Tensor, positions: number | Tensor = 0): Tensor {
    return rope(x, positions, this.invFreq);
  }

  /** Frees the inv_freq table. */
  override dispose(): void {
    super.dispose();
    this.invFreq.dispose();
  }
}
