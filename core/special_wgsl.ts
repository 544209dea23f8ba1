/**
 * WGSL helpers for NaN and ±Inf, defined once: core/kernel.ts adds them to every kernel whose
 * code calls an `mg_` function, so NaN is tested one way, in one place.
 *
 * Why bit tests: WGSL compilers and GPU drivers may assume floats are never NaN (fast math),
 * so `x != x` can be folded to false and `min`/`max`/comparisons may drop a NaN operand; an
 * integer test on `bitcast<u32>(x)` is not a float operation and cannot be folded away. And
 * why run-time bits: Tint rejects non-finite constant expressions (the +Inf bit pattern
 * bitcast to f32 as a constant), so ±Inf and NaN are built from a `var`.
 *
 * Semantics follow PyTorch: NaN wins in `mg_max`/`mg_min`; `mg_exp` and `mg_log` keep NaN
 * (SwiftShader's `exp(NaN)` is +Inf and its `log(NaN)` is finite) and `mg_log` gives NaN
 * below 0 and −Inf at ±0, where WGSL's `log` is indeterminate.
 */
export const SPECIAL_WGSL = `
fn mg_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn mg_bits(b: u32) -> f32 { var v = b; return bitcast<f32>(v); }
fn mg_nan() -> f32 { return mg_bits(0x7fc00000u); }
fn mg_inf() -> f32 { return mg_bits(0x7f800000u); }
fn mg_max(a: f32, b: f32) -> f32 { return select(select(max(a, b), b, mg_isnan(b)), a, mg_isnan(a)); }
fn mg_min(a: f32, b: f32) -> f32 { return select(select(min(a, b), b, mg_isnan(b)), a, mg_isnan(a)); }
fn mg_exp(x: f32) -> f32 { return select(exp(x), x, mg_isnan(x)); }
fn mg_log(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) == 0u) { return -mg_inf(); }
  if (b > 0x7f800000u) { return mg_nan(); } // NaN, or the sign bit set (x < 0)
  return log(x);
}`;
