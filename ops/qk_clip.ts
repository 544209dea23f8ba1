/**
 * The QK-Clip weight rescaling kernel (MuonClip, Kimi K2 §2.1): one dispatch per attention
 * layer computes the per-head factors γ_h = min(1, τ / S_max_h) from the max logits, writes
 * them out, and scales, in place, the rows of the layer's two projection weights (query and
 * key side) by γ_h^p, where the power p depends on which part of head h a row belongs to.
 * Every thread recomputes γ of its row's head from S_max (one division), so no γ tensor has to
 * exist before the scaling: 3 dispatches per layer became 1 (tiny K2: 12 → 4 per step).
 */
import { MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

/**
 * Which power of γ_h the rows of one head part get, in [0, 1]: 0 leaves them untouched
 * (exactly), 1 multiplies by γ_h (exactly), 0.5 by √γ_h (WGSL `sqrt`), others by `pow`.
 */
export type GammaPower = number;

/**
 * One weight QK-Clip scales: `weight` [heads · rowsPerHead, cols], contiguous f32; row r of
 * head h = ⌊r / rowsPerHead⌋ is multiplied by γ_h^lowPower when (r mod rowsPerHead) < split,
 * else by γ_h^highPower.
 */
export interface HeadRows {
  weight: Tensor;
  rowsPerHead: number;
  split: number;
  lowPower: GammaPower;
  highPower: GammaPower;
}

/** Per weight (0, 1): elements, columns, rows per head, split, power codes, offset, powers. */
const PART = {
  n: "u32",
  cols: "u32",
  rowsPerHead: "u32",
  split: "u32",
  lowCode: "u32",
  highCode: "u32",
  offset: "u32",
  lowPower: "f32",
  highPower: "f32",
} as const;
/** Heads, τ, the offset of the max logits, then the two weights' PART words. */
const QK_CLIP = params("qk_clip", {
  heads: "u32",
  tau: "f32",
  mOffset: "u32",
  ...Object.fromEntries(Object.entries(PART).map(([k, t]) => [`${k}0`, t])) as {
    [K in keyof typeof PART as `${K}0`]: typeof PART[K];
  },
  ...Object.fromEntries(Object.entries(PART).map(([k, t]) => [`${k}1`, t])) as {
    [K in keyof typeof PART as `${K}1`]: typeof PART[K];
  },
});

/** Codes 0, 1, 2 are the exact cases (1, √γ, γ); 3 is pow(γ, power) with the power as f32. */
const code = (p: GammaPower) => (p === 0 ? 0 : p === 0.5 ? 1 : p === 1 ? 2 : 3);

function checkPart(part: HeadRows, heads: number): void {
  const { weight, rowsPerHead } = part;
  const [rows] = weight.shape;
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
  for (const pw of [part.lowPower, part.highPower]) {
    if (!(pw >= 0 && pw <= 1)) {
      throw new MoongradError("qkClip", `a power of γ must be in [0, 1], got ${pw}`);
    }
  }
}

/**
 * QK-Clip of one attention layer in one dispatch: γ_h = min(1, τ / S_max_h) from `maxLogits`
 * (f32 [H]; exactly 1 where S_max_h ≤ τ, so those heads' rows are left bit-identical; τ =
 * Infinity gives all ones), the rows of `q` and `k` scaled in place as `HeadRows` describes.
 * Returns γ (f32 [H], new; the caller owns it).
 */
export function clipHeadRows(maxLogits: Tensor, tau: number, q: HeadRows, k: HeadRows): Tensor {
  if (!(tau > 0)) throw new MoongradError("qkClip", `tau must be > 0, got ${tau}`);
  if (maxLogits.dtype !== "f32" || maxLogits.rank !== 1 || !maxLogits.isContiguous) {
    throw new MoongradError(
      "qkClip",
      `maxLogits must be contiguous f32 [heads], got ${maxLogits.dtype} [${maxLogits.shape}]`,
    );
  }
  const heads = maxLogits.shape[0];
  checkPart(q, heads);
  checkPart(k, heads);
  const gamma = Tensor.empty([heads], "f32");
  if (q.weight.storage("qkClip").buf === k.weight.storage("qkClip").buf) {
    // Views of one tensor (a fused q/k weight) cannot be two writable bindings: one weight
    // per dispatch, the other binding a scratch word that no thread touches.
    const none = Tensor.empty([1, 1], "f32");
    const idle = { weight: none, rowsPerHead: 1, split: 0, lowPower: 0, highPower: 0 };
    launch(maxLogits, tau, q, idle, gamma, heads, true);
    launch(maxLogits, tau, k, idle, gamma, heads, true);
    none.dispose();
  } else launch(maxLogits, tau, q, k, gamma, heads);
  return gamma;
}

/** Records the kernel over q's and k's elements (`kIdle`: k is a placeholder, n = 0). */
function launch(
  maxLogits: Tensor,
  tau: number,
  q: HeadRows,
  k: HeadRows,
  gamma: Tensor,
  heads: number,
  kIdle = false,
): void {
  const words: Record<string, number> = {
    heads,
    tau: Number.isFinite(tau) ? tau : 3.4e38,
    mOffset: maxLogits.offset,
  };
  [q, k].forEach((part, j) => {
    const values = {
      n: j === 1 && kIdle ? 0 : part.weight.size,
      cols: part.weight.shape[1],
      rowsPerHead: part.rowsPerHead,
      split: part.split,
      lowCode: code(part.lowPower),
      highCode: code(part.highPower),
      offset: part.weight.offset,
      lowPower: part.lowPower,
      highPower: part.highPower,
    };
    for (const [key, v] of Object.entries(values)) words[`${key}${j}`] = v;
  });
  const kern = kernel({
    name: "qk_clip",
    bindings: [
      { name: "w0", type: "f32", access: "read_write" },
      { name: "w1", type: "f32", access: "read_write" },
      { name: "m", type: "f32", access: "read" },
      { name: "gamma", type: "f32", access: "read_write" },
    ],
    workgroupSize: [256],
    params: QK_CLIP,
    prelude: `
fn gamma_of(h: u32) -> f32 {
  let s = m[p_mOffset() + h];
  let t = p_tau();
  return select(1.0, t / s, s > t);
}
fn gamma_pow(g: f32, code: u32, power: f32) -> f32 {
  if (code == 0u) { return 1.0; }
  if (code == 1u) { return sqrt(g); }
  if (code == 2u) { return g; }
  return pow(g, power);
}`,
    body: `
  let i = ${linearId(256)};
  if (i < p_heads()) { gamma[i] = gamma_of(i); }
  let n0 = p_n0();
  if (i < n0) {
    let row = i / p_cols0();
    let low = row % p_rowsPerHead0() < p_split0();
    let f = gamma_pow(gamma_of(row / p_rowsPerHead0()), select(p_highCode0(), p_lowCode0(), low),
      select(p_highPower0(), p_lowPower0(), low));
    if (f != 1.0) { w0[p_offset0() + i] = w0[p_offset0() + i] * f; }
  } else if (i - n0 < p_n1()) {
    let j = i - n0;
    let row = j / p_cols1();
    let low = row % p_rowsPerHead1() < p_split1();
    let f = gamma_pow(gamma_of(row / p_rowsPerHead1()), select(p_highCode1(), p_lowCode1(), low),
      select(p_highPower1(), p_lowPower1(), low));
    if (f != 1.0) { w1[p_offset1() + j] = w1[p_offset1() + j] * f; }
  }`,
  });
  const total = Math.max(words.n0 + words.n1, heads);
  if (total > 0) {
    dispatch(
      kern,
      [q.weight, k.weight, maxLogits, gamma].map((t) => t.storage("qkClip").buf),
      QK_CLIP.pack(words as never),
      grid1d(total, 256),
    );
  }
}
