/**
 * SwiGLU, the gate of DeepSeek / Kimi's MLPs and experts: y = silu(a) ⊙ b, fused.
 *
 * Forward: one pointwise pass over (a, b) instead of two (silu, then mul), with no silu(a)
 * intermediate. Backward: one pass over (g, a, b) writing both gradients into one buffer
 * [2, ...shape] (the first half da = g·b·σ(a)·(1 + a·(1 − σ(a))), the second db = g·silu(a));
 * the two returned gradients are contiguous views of its halves. Three dispatches (silu_grad
 * and two muls) become one. Inputs may be any strided or broadcast views of equal shape
 * (no broadcasting between a and b: the MLP's two projections always match).
 * Measured on the tiny preset (4 × 64 tokens): 7 SwiGLUs per step, 21 dispatches saved.
 */
import { isFloat } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { record } from "../core/autograd.ts";
import { Tensor } from "../core/tensor.ts";
import { MATH_WGSL } from "./elementwise.ts";
import { pointwise } from "./pointwise.ts";

const GRAD_WGSL = MATH_WGSL + `
fn swiglu_da(g: f32, a: f32, b: f32) -> f32 {
  let s = mg_sigmoid(a);
  return g * b * s * (1.0 + a * (1.0 - s));
}`;

/**
 * silu(a) ⊙ b in one kernel (the SwiGLU of DeepSeek / Kimi MLPs), differentiable in both.
 *
 * @example The MLP gate
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([0, 1, -2]), b = mg.tensor([2, 2, 2]);
 * console.log(await mg.swiglu(a, b).toArray()); // [0, 1.462…, -0.476…] = silu(a)·b
 * ```
 */
export function swiglu(a: Tensor, b: Tensor): Tensor {
  for (const [name, t] of [["a", a], ["b", b]] as const) {
    if (!(t instanceof Tensor)) {
      throw new MoongradError("swiglu", `${name} must be a Tensor, got ${typeof t}`);
    }
    t.storage("swiglu");
  }
  if (
    !isFloat(a.dtype) || a.dtype !== b.dtype || a.rank !== b.rank ||
    a.shape.some((d, i) => d !== b.shape[i])
  ) {
    throw new MoongradError(
      "swiglu",
      `a ${a.dtype} ${fmtShape(a.shape)} and b ${b.dtype} ${
        fmtShape(b.shape)
      } must be float tensors of one dtype and shape`,
    );
  }
  const out = pointwise("swiglu", [a, b], a.shape, a.dtype, "v0 * mg_sigmoid(v0) * v1", MATH_WGSL);
  return record(out, "swiglu", [a, b], (g, _needs, [sa, sb]) => {
    const n = g.size;
    // i < n: da; i ≥ n: db (the inputs broadcast over the leading axis of 2).
    const both = pointwise(
      "swiglu_grad",
      [g, sa, sb, { scalar: n, dtype: "i32" }],
      [2, ...g.shape],
      g.dtype,
      "select(swiglu_da(v0, v1, v2), v0 * v1 * mg_sigmoid(v1), i >= u32(v3))",
      GRAD_WGSL,
    );
    const strides = both.strides.slice(1);
    const da = both.view(g.shape, strides, both.offset);
    const db = both.view(g.shape, strides, both.offset + n);
    both.dispose();
    return [da, db];
  }, [a, b]);
}
