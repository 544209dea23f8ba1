/**
 * The QK-Clip weight rescaling kernels (MuonClip, Kimi K2 §2.1): per-head factors
 * γ_h = min(1, τ / S_max_h) computed on the GPU, and in-place row scaling of a projection
 * weight by γ_h^p where the power p depends on which part of head h a row belongs to.
 */
import { MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";
import { pointwise } from "./pointwise.ts";

/**
 * γ_h = min(1, τ / S_max_h) for each head (f32 [H]); exactly 1 where S_max_h ≤ τ, so those
 * heads are left bit-identical by `scaleHeadRows`. τ = Infinity gives all ones.
 */
export function clipFactors(maxLogits: Tensor, tau: number): Tensor {
  if (!(tau > 0)) throw new MoongradError("qkClip", `tau must be > 0, got ${tau}`);
  if (maxLogits.dtype !== "f32" || maxLogits.rank !== 1) {
    throw new MoongradError(
      "qkClip",
      `maxLogits must be f32 [heads], got ${maxLogits.dtype} [${maxLogits.shape}]`,
    );
  }
  const t = Number.isFinite(tau) ? tau : 3.4e38;
  return pointwise(
    "qk_clip_gamma",
    [maxLogits, { scalar: t, dtype: "f32" }],
    maxLogits.shape,
    "f32",
    "select(1.0, v1 / v0, v0 > v1)",
  );
}

/**
 * Which power of γ_h the rows of one head part get, in [0, 1]: 0 leaves them untouched
 * (exactly), 1 multiplies by γ_h (exactly), 0.5 by √γ_h (WGSL `sqrt`), others by `pow`.
 */
export type GammaPower = number;

/**
 * Elements, columns, rows per head, the split row within a head, the γ power codes of the
 * rows below and from the split (0: 1, 1: √γ, 2: γ, 3: pow), the offsets of the weight and
 * of γ, and the two powers (read by code 3).
 */
const QK_CLIP = params("qk_clip_scale_rows", {
  n: "u32",
  cols: "u32",
  rowsPerHead: "u32",
  split: "u32",
  lowCode: "u32",
  highCode: "u32",
  weightOffset: "u32",
  gammaOffset: "u32",
  lowPower: "f32",
  highPower: "f32",
});

/**
 * Scales, in place, the rows of `weight` [heads · rowsPerHead, cols] head by head: row r of
 * head h = ⌊r / rowsPerHead⌋ is multiplied by γ_h^lowPower when (r mod rowsPerHead) < split,
 * else by γ_h^highPower. Power 0 multiplies by exactly 1.
 */
export function scaleHeadRows(
  weight: Tensor,
  gamma: Tensor,
  rowsPerHead: number,
  split: number,
  lowPower: GammaPower,
  highPower: GammaPower,
): void {
  const [rows, cols] = weight.shape;
  const heads = gamma.shape[0];
  if (weight.rank !== 2 || !weight.isContiguous || weight.dtype !== "f32") {
    throw new MoongradError(
      "qkClip",
      `weight must be a contiguous f32 matrix, got ${weight.dtype} [${weight.shape}]`,
    );
  }
  if (rows !== heads * rowsPerHead) {
    throw new MoongradError(
      "qkClip",
      `weight has ${rows} rows; expected ${heads} heads × ${rowsPerHead} rows per head`,
    );
  }
  for (const pw of [lowPower, highPower]) {
    if (!(pw >= 0 && pw <= 1)) {
      throw new MoongradError("qkClip", `a power of γ must be in [0, 1], got ${pw}`);
    }
  }
  const n = rows * cols;
  if (n === 0) return;
  // Codes 0, 1, 2 are the exact cases (1, √γ, γ); 3 is pow(γ, power) with the power as f32.
  const code = (p: GammaPower) => (p === 0 ? 0 : p === 0.5 ? 1 : p === 1 ? 2 : 3);
  const words = QK_CLIP.pack({
    n,
    cols,
    rowsPerHead,
    split,
    lowCode: code(lowPower),
    highCode: code(highPower),
    weightOffset: weight.offset,
    gammaOffset: gamma.offset,
    lowPower,
    highPower,
  });
  const k = kernel({
    name: "qk_clip_scale_rows",
    bindings: [
      { name: "w", type: "f32", access: "read_write" },
      { name: "gamma", type: "f32", access: "read" },
    ],
    workgroupSize: [256],
    params: QK_CLIP,
    prelude: `
fn gamma_pow(g: f32, code: u32, power: f32) -> f32 {
  if (code == 0u) { return 1.0; }
  if (code == 1u) { return sqrt(g); }
  if (code == 2u) { return g; }
  return pow(g, power);
}`,
    body: `
  let i = ${linearId(256)};
  if (i >= p_n()) { return; }
  let row = i / p_cols();
  let head = row / p_rowsPerHead();
  let low = row % p_rowsPerHead() < p_split();
  let part = select(p_highCode(), p_lowCode(), low);
  let power = select(p_highPower(), p_lowPower(), low);
  let f = gamma_pow(gamma[p_gammaOffset() + head], part, power);
  if (f != 1.0) { w[p_weightOffset() + i] = w[p_weightOffset() + i] * f; }`,
  });
  dispatch(k, [weight.storage("qkClip").buf, gamma.storage("qkClip").buf], words, grid1d(n, 256));
}
