/**
 * `clamp(x, min, max)` with scalar bounds and its vjp, NaN-preserving as in PyTorch: a NaN
 * element stays NaN (and gets no gradient); ±Infinity is clamped like any other value.
 */
import { isFloat } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { pointwise } from "./pointwise.ts";

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;

function checkBound(x: Tensor, name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number" || Number.isNaN(v)) {
    throw new MoongradError("clamp", `${name} must be a number (not NaN), got ${String(v)}`);
  }
  if (!isFloat(x.dtype) && !Number.isInteger(v)) {
    throw new MoongradError(
      "clamp",
      `${name} must be an integer for i32 x ${fmtShape(x.shape)}, got ${v}`,
    );
  }
  return isFloat(x.dtype) ? v : Math.min(Math.max(v, I32_MIN), I32_MAX);
}

/**
 * Limits every element of `x` to [min, max] (either bound may be omitted): min(max(x, min),
 * max), so max wins when min > max, as in PyTorch. NaN stays NaN. The gradient passes where
 * min ≤ x ≤ max and is 0 elsewhere and at NaN. x: f32, f16 or i32.
 *
 * @example Clip values to a range (either bound optional)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([-2, 0.5, 3]);
 * console.log(await mg.clamp(x, -1, 1).toArray()); // [-1, 0.5, 1]
 * console.log(await x.clamp(0).toArray()); // [0, 0.5, 3]
 * ```
 */
export function clamp(x: Tensor, min?: number, max?: number): Tensor {
  if (!(x instanceof Tensor)) {
    throw new MoongradError("clamp", `x must be a Tensor, got ${typeof x}`);
  }
  x.storage("clamp");
  if (x.dtype === "bool") {
    throw new MoongradError(
      "clamp",
      `x has dtype bool ${fmtShape(x.shape)}; expected f32, f16 or i32`,
    );
  }
  if (min === undefined && max === undefined) {
    throw new MoongradError("clamp", "at least one of min and max must be given");
  }
  const float = isFloat(x.dtype);
  const lo = { scalar: checkBound(x, "min", min, float ? -Infinity : I32_MIN), dtype: x.dtype };
  const hi = { scalar: checkBound(x, "max", max, float ? Infinity : I32_MAX), dtype: x.dtype };
  const expr = float ? "select(min(max(v0, v1), v2), v0, mg_isnan(v0))" : "min(max(v0, v1), v2)";
  const out = pointwise("clamp", [x, lo, hi], x.shape, x.dtype, expr);
  return record(out, "clamp", [x], (g, _needs, [xs]) => [
    pointwise(
      "clamp_grad",
      [g, xs, lo, hi],
      g.shape,
      g.dtype,
      "select(0.0, v0, v1 >= v2 && v1 <= v3 && !mg_isnan(v1))",
    ),
  ], [x]);
}
