/**
 * QK-Clip (REFERENCE §3): after an optimizer step, heads whose max pre-softmax logit S_max
 * exceeded τ get their query/key projections rescaled so that those logits scale by exactly
 * γ_h = τ / S_max_h. Heads at or under τ are left bit-identical.
 */
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { noGrad } from "../core/autograd.ts";
import { clipHeadRows } from "../ops/qk_clip.ts";
import type { KimiConfig } from "../nn/config.ts";
import type { Module } from "../nn/module.ts";

function paramByName(module: Module, names: readonly string[]): Tensor {
  for (const [n, t] of module.namedParameters()) if (names.includes(n)) return t;
  throw new MoongradError(
    "qkClip",
    `the attention module has no parameter named ${names.join(" or ")}`,
  );
}

/**
 * Options of `qkClipMla` / `qkClipMha`.
 *
 * @example Put all of the head-specific scaling on the query side
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.QkClipOptions = { alpha: 1 }; // q ×γ, k untouched
 * ```
 */
export interface QkClipOptions {
  /**
   * The q/k split exponent α ∈ [0, 1] (Megatron's `qk-clip-alpha`): the head-specific query
   * part is scaled by γ^α and the key part by γ^(1−α), so their product is γ. Default 0.5
   * (K2: √γ each). MLA's rotary query rows always take the whole γ, because the rotary key
   * is shared by every head and cannot be scaled per head.
   */
  alpha?: number;
}

function clipAlpha(options: QkClipOptions): number {
  const alpha = options.alpha ?? 0.5;
  if (!(alpha >= 0 && alpha <= 1)) {
    throw new MoongradError("qkClip", `alpha must be in [0, 1], got ${alpha}`);
  }
  return alpha;
}

/**
 * QK-Clip of one MLA layer, in place. q_nope rows of each head (in q_b_proj or q_proj) are
 * scaled by γ_h^α and the k_nope rows of kv_b_proj by γ_h^(1−α) (α = 0.5 by default: √γ
 * each, as in K2), the q_rope rows by γ_h; the shared rotary key (kv_a_proj_with_mqa) and
 * the value rows are untouched. Every logit of head h, q_nope·k_nope + q_rope·k_rope, is
 * therefore multiplied by exactly γ_h.
 * Returns γ (f32 [H], 1 for unclipped heads); the caller owns it.
 *
 * @example Clip the heads of one MLA layer
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny"); // 4 heads
 * const attn = new mg.nn.MultiHeadLatentAttention(config, { seed: 0 });
 * const maxLogits = mg.tensor([50, 200, 80, 400]); // f32 [H]
 * const gamma = mg.optim.qkClipMla(attn, config, maxLogits, 100);
 * console.log(await gamma.toArray()); // [1, 0.5, 1, 0.25]: heads 1 and 3 scaled to reach τ
 * ```
 */
export function qkClipMla(
  attention: Module,
  config: KimiConfig,
  maxLogits: Tensor,
  tau: number,
  options: QkClipOptions = {},
): Tensor {
  const alpha = clipAlpha(options);
  const H = config.num_attention_heads;
  if (maxLogits.shape[0] !== H) {
    throw new MoongradError("qkClip", `maxLogits has ${maxLogits.shape[0]} heads, config ${H}`);
  }
  const dn = config.qk_nope_head_dim;
  const dqk = dn + config.qk_rope_head_dim;
  const q = paramByName(attention, ["q_b_proj.weight", "q_proj.weight"]);
  const kvB = paramByName(attention, ["kv_b_proj.weight"]);
  return noGrad(() =>
    clipHeadRows(
      maxLogits,
      tau,
      { weight: q, rowsPerHead: dqk, split: dn, lowPower: alpha, highPower: 1 },
      {
        weight: kvB,
        rowsPerHead: dn + config.v_head_dim,
        split: dn,
        lowPower: 1 - alpha,
        highPower: 0,
      },
    )
  );
}

/**
 * QK-Clip of plain multi-head attention, in place: W_q and W_k ([H · headDim, D], head-major
 * rows) are scaled by γ_h^α and γ_h^(1−α) per head (α = 0.5: √γ_h each). Returns γ (f32 [H]);
 * the caller owns it.
 *
 * @example Clip plain multi-head attention weights
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const H = 2, d = 8, D = 32;
 * const wq = mg.randn([H * d, D], { seed: 0 }), wk = mg.randn([H * d, D], { seed: 1 });
 * const gamma = mg.optim.qkClipMha(wq, wk, mg.tensor([150, 60]), 100, d);
 * console.log(await gamma.toArray()); // [0.6666…, 1]: head 0's q and k rows scaled by √γ
 * ```
 */
export function qkClipMha(
  wq: Tensor,
  wk: Tensor,
  maxLogits: Tensor,
  tau: number,
  headDim: number,
  options: QkClipOptions = {},
): Tensor {
  const alpha = clipAlpha(options);
  const part = (weight: Tensor, power: number) => ({
    weight,
    rowsPerHead: headDim,
    split: headDim,
    lowPower: power,
    highPower: power,
  });
  return noGrad(() => clipHeadRows(maxLogits, tau, part(wq, alpha), part(wk, 1 - alpha)));
}
