/**
 * sin and cos in WGSL, accurate to a few f32 ulps on every implementation, for arguments up
 * to |x| ≈ 1.6e6 (RoPE angles at a million positions).
 *
 * WGSL only promises its built-in sin/cos to an absolute 2^-11 on [−π, π] and nothing outside
 * it; Dawn on SwiftShader is off by 4.6e-5 at ordinary arguments (measured), and GPUs differ,
 * so results would depend on the browser. These use Cody–Waite reduction: k = round(x·2/π),
 * r = x − k·π/2 with π/2 split into pieces on fixed binary grids (2^-3, 2^-7, …, 2^-23, each
 * piece at most 4 significant bits, `HALF_PI_PIECES`) plus one full-precision f32 tail. For
 * |k| < 2^20 every product k·piece is exact, and every partial difference is exactly
 * representable (its magnitude over its grid stays below 2^24), so the only roundings are the
 * last subtraction (≤ 2^-25 absolute) and the tail's own error (|k|·2^-47 ≤ 2^-27): r is
 * within ~4e-8 of x − k·π/2 whatever the compiler contracts into FMAs. Then the minimax
 * polynomials of Cephes' sinf/cosf on [−π/4, π/4] (about 1 ulp there), chosen by quadrant.
 * Beyond |x| ≈ 1.6e6 the products stop being exact and the error grows with |x| like any f32
 * reduction. ±inf and NaN give NaN. About 26 FLOPs, which is noise next to a memory-bound pass.
 */

/**
 * π/2 as pieces on the grids 2^-3, 2^-7, 2^-11, 2^-15, 2^-19, 2^-23 (truncated from float64
 * π/2, zero pieces dropped) followed by the f32-rounded remainder. Each grid piece has at most
 * 4 significant bits, so its product with an integer |k| < 2^20 is exact in f32.
 */
export const HALF_PI_PIECES: readonly number[] = (() => {
  const pieces: number[] = [];
  let rest = Math.PI / 2;
  for (const g of [3, 7, 11, 15, 19, 23]) {
    const p = Math.floor(rest * 2 ** g) / 2 ** g;
    rest -= p;
    if (p !== 0) pieces.push(p);
  }
  pieces.push(Math.fround(rest));
  return pieces;
})();

const REDUCE = HALF_PI_PIECES.map((p) => `  r = r - k * ${p};`).join("\n");

/** WGSL: `mg_sin(x)`, `mg_cos(x)` and `mg_sincos(x) -> vec2<f32>(sin, cos)`. */
export const TRIG_WGSL = `
fn mg_sincos(x: f32) -> vec2<f32> {
  let k = round(x * 0.6366197723675814);
  var r = x;
${REDUCE}
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
