/**
 * sin and cos in WGSL, accurate to a few f32 ulps on every implementation.
 *
 * WGSL only promises its built-in sin/cos to an absolute 2^-11 on [−π, π] and nothing outside
 * it; Dawn on SwiftShader is off by 4.6e-5 at ordinary arguments (measured), and GPUs differ,
 * so results would depend on the browser. These use Cody–Waite reduction by π/2 (π/2 split
 * into three parts whose products with k stay exact for |k| < 2^13, i.e. |x| ≲ 1.2e4; beyond
 * that the error grows with |x| like any f32 reduction), then the minimax polynomials of
 * Cephes' sinf/cosf on [−π/4, π/4] (about 1 ulp there), chosen by quadrant. ±inf and NaN give
 * NaN. About 20 FLOPs, which is noise next to a memory-bound pass.
 */

/** WGSL: `mg_sin(x)`, `mg_cos(x)` and `mg_sincos(x) -> vec2<f32>(sin, cos)`. */
export const TRIG_WGSL = `
fn mg_sincos(x: f32) -> vec2<f32> {
  let k = round(x * 0.6366197723675814);
  let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.549789948768648e-8;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let q = u32(i32(k) & 3);
  let sn = select(select(-c, -s, q == 2u), select(c, s, q == 0u), q < 2u);
  let cs = select(select(s, -c, q == 2u), select(-s, c, q == 0u), q < 2u);
  return vec2<f32>(sn, cs);
}
fn mg_sin(x: f32) -> f32 { return mg_sincos(x).x; }
fn mg_cos(x: f32) -> f32 { return mg_sincos(x).y; }`;
