/**
 * Rotary position embedding (RoPE) in both pair layouts Hugging Face's DeepseekV3 uses:
 * - interleaved (`rope_interleave: true`, DeepSeek / Kimi weights): pairs (x0, x1), (x2, x3), …
 *   of the last axis rotate together;
 * - half-split (`rope_interleave: false`, plain `rotate_half`): pairs (x_i, x_{i+d/2}).
 * Pair i rotates by angle p·inv_freq_i, where p is the position of the row along the
 * second-to-last axis (an offset) or read from an i32 tensor, and the rotated pair is scaled by
 * an attention factor (YaRN's, 1 otherwise): y = f·(x_a cos − x_b sin, x_a sin + x_b cos). One
 * kernel serves both layouts (the pair's two indices come from the uniform words), one thread
 * per pair; the input is read through its strides (q_rope sliced out of a projection is not
 * copied). Backward applies the transpose, f times the rotation by −angle, with the same kernel.
 *
 * Precision follows HF: inv_freq is an f32 table (computed in float64 and rounded once, see
 * `ropeInvFreq` and nn/rope.ts for YaRN), the angle is the f32 product p·inv_freq exactly as HF
 * forms it (at p ≈ 1e5 that product is itself up to 2^-8 rad away from the real p·inv_freq;
 * HF has the same rounding, and matching it is the point), and its sin/cos come from
 * `mg_sincos` (ops/wgsl_trig.ts: exact Cody–Waite reduction up to |angle| ≈ 1.6e6, then
 * polynomials, a few ulps on every implementation) rather than WGSL's built-ins, which are
 * only accurate to 2^-11 near zero (4.6e-5 off on Dawn/SwiftShader). cos·f and sin·f are
 * rounded to f32 before the rotation, as HF multiplies its f32 cos/sin by attention_scaling.
 *
 * Layout of the output: the half-split layout writes its pairs back to (i, i + d/2), which is
 * HF's output. HF's `apply_rotary_pos_emb_interleave` returns the interleaved pairs
 * de-interleaved (first every even, then every odd component); this op keeps them
 * interleaved. Dot products between rotated q and k, all attention uses, are identical in both
 * arrangements (the same permutation on both sides).
 */
import { isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, kernel } from "../core/kernel.ts";
import { fitLength, params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { numel } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { TRIG_WGSL } from "./wgsl_trig.ts";
import { record } from "../core/autograd.ts";
import { tensor } from "./creation.ts";
import { columnsPerThread, grid1d, linearId } from "./grid.ts";

const WG = 256;

/**
 * inv_freq_i = θ^(−2i/d) for i < d/2, computed in float64 and rounded to f32.
 *
 * @example Plain RoPE frequencies
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.nn.ropeInvFreq(4, 10000)); // Float32Array [1, 0.01]
 * // an odd dim or theta <= 0 throws a MoongradError
 * ```
 */
export function ropeInvFreq(dim: number, theta: number): Float32Array {
  if (!Number.isInteger(dim) || dim <= 0 || dim % 2 !== 0) {
    throw new MoongradError("rope", `the rotary dim must be a positive even integer, got ${dim}`);
  }
  if (typeof theta !== "number" || !Number.isFinite(theta) || theta <= 0) {
    throw new MoongradError("rope", `theta must be a finite number > 0, got ${theta}`);
  }
  return Float32Array.from({ length: dim / 2 }, (_, i) => Math.pow(theta, (-2 * i) / dim));
}

/** Strides of `pos` right-aligned to the outer shape of x (0 on broadcast axes). */
export function positionStrides(pos: Tensor, outer: readonly number[], x: Tensor): number[] {
  const lead = outer.length - pos.rank;
  const bad = () =>
    new MoongradError(
      "rope",
      `positions ${fmtShape(pos.shape)} must broadcast to x's shape without its last axis ` +
        `${fmtShape(outer)} (x is ${fmtShape(x.shape)}); e.g. positions [T] for x [..., T, d]`,
    );
  if (lead < 0) throw bad();
  return outer.map((d, i) => {
    if (i < lead) return 0;
    const pd = pos.shape[i - lead];
    if (pd === d) return d === 1 ? 0 : pos.strides[i - lead];
    if (pd === 1) return 0;
    throw bad();
  });
}

/**
 * How `rope` pairs and scales the components (see the file header).
 *
 * @example Half-split pairs (HF rotate_half)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.nn.RopeOptions = { interleaved: false };
 * ```
 */
export interface RopeOptions {
  /**
   * true (default): interleaved pairs (x[2i], x[2i+1]), HF `rope_interleave: true`; false:
   * half-split pairs (x[i], x[i + d/2]), HF's plain `rotate_half` (`rope_interleave: false`).
   */
  interleaved?: boolean;
  /** Factor f multiplying cos and sin (YaRN's attention factor); default 1. */
  attentionFactor?: number;
}

/** Largest rank of the outer axes: 11 scalar words and three rank-length arrays fill the block. */
const ROPE_RANK = fitLength(11, 3);

/**
 * The scalar words of both RoPE kernels: pairs, half the head dim, outer rank, inv_freq offset,
 * the position (offset of the positions tensor, or the first position), the factor and sign
 * (−1: the backward), the pair layout (step, partner), x's last-axis stride and offset.
 */
const ROPE_SCALARS = {
  pairs: "u32",
  half: "u32",
  outerRank: "u32",
  invOffset: "u32",
  pos: "i32",
  factor: "f32",
  sign: "f32",
  step: "u32",
  partner: "u32",
  lastStride: "u32",
  xOffset: "u32",
} as const;

/** RoPE: the shared scalars, then the outer shape and the outer strides of x and positions. */
const ROPE = params("rope", {
  ...ROPE_SCALARS,
  outer: ["u32", ROPE_RANK],
  xStrides: ["u32", ROPE_RANK],
  posStrides: ["u32", ROPE_RANK],
});

/** Largest outer rank of `ropeConcat`: 18 scalar words and five rank-length arrays. */
const ROPE_CAT_RANK = fitLength(18, 5);

/**
 * `ROPE` plus the pass-through input of `ropeConcat`: its width, copies, offset, strides, the
 * output column where the rotated block goes (`at`), and the output's offset and strides.
 */
const ROPE_CAT = params("rope_cat", {
  ...ROPE_SCALARS,
  passWidth: "u32",
  copies: "u32",
  passOffset: "u32",
  passLast: "u32",
  at: "u32",
  outOffset: "u32",
  outLast: "u32",
  outer: ["u32", ROPE_CAT_RANK],
  xStrides: ["u32", ROPE_CAT_RANK],
  posStrides: ["u32", ROPE_CAT_RANK],
  passStrides: ["u32", ROPE_CAT_RANK],
  outStrides: ["u32", ROPE_CAT_RANK],
});

/**
 * The rotation of x's last axis (contiguous output). With `pass` [..., P] (same outer shape),
 * the output is [..., P + d]: `pass` copied around the rotated x, which goes to output columns
 * at..at+d−1 (`at` defaults to P: [pass | rope(x)]), in the same dispatch (one thread per
 * pair, then one per 4, 2 or 1 copied elements). With a pass, `out` may be given: a
 * [..., P + d] view with any (non-overlapping) strides to write into, e.g. a gradient laid out
 * like a permuted input.
 */
export function rotate(
  x: Tensor,
  positions: number | Tensor,
  invFreq: Tensor,
  sign: 1 | -1,
  interleaved: boolean,
  factor: number,
  pass?: Tensor,
  at?: number,
  into?: Tensor,
): Tensor {
  const op = pass ? "ropeConcat" : sign === 1 ? "rope" : "rope_grad";
  const outer = x.shape.slice(0, -1);
  const dp = pass ? pass.shape[pass.rank - 1] : 0;
  const out = into ?? Tensor.empty([...outer, dp + x.shape[x.rank - 1]], x.dtype);
  const half = x.shape[x.rank - 1] / 2;
  const nPairs = numel(outer) * half;
  // Copy threads move G consecutive pass columns each: the index arithmetic and parameter
  // reads, which cost more than the copy itself on a CPU adapter, happen once per G.
  const G = columnsPerThread(dp);
  const copies = numel(outer) * dp / G;
  if (nPairs + copies === 0) return out;
  const r1 = outer.length;
  const byTensor = positions instanceof Tensor;
  let posStrides: number[];
  let posWord: number;
  if (byTensor) {
    posStrides = positionStrides(positions, outer, x);
    posWord = positions.offset;
  } else {
    posStrides = outer.map((_, i) => (i === r1 - 1 ? 1 : 0));
    posWord = positions;
  }
  // Pair j holds components (j·step, j·step + partner) of its row: (2j, 2j+1) or (j, j+d/2).
  const [step, partner] = interleaved ? [2, 1] : [1, half];
  const common = {
    pairs: nPairs,
    half,
    outerRank: r1,
    invOffset: invFreq.offset,
    pos: posWord,
    factor,
    sign,
    step,
    partner,
    lastStride: x.strides[x.rank - 1],
    xOffset: x.offset,
    outer,
    xStrides: x.strides.slice(0, -1),
    posStrides,
  };
  const words = pass
    ? ROPE_CAT.pack({
      ...common,
      passWidth: dp,
      copies,
      passOffset: pass.offset,
      passLast: pass.strides[pass.rank - 1],
      at: at ?? dp,
      outOffset: out.offset,
      outLast: out.strides[out.rank - 1],
      passStrides: pass.strides.slice(0, -1),
      outStrides: out.strides.slice(0, -1),
    })
    : ROPE.pack(common);
  const t = wgslType(x.dtype);
  const xBuf = x.storage(op).buf;
  // pass and x are often slices of one projection: bind a shared buffer once.
  const passBuf = pass?.storage(op).buf;
  const passName = pass ? (passBuf === xBuf ? "x" : "src") : "";
  const bindings: Binding[] = [
    { name: "x", type: t, access: "read" },
    { name: "inv", type: "f32", access: "read" },
  ];
  if (byTensor) bindings.push({ name: "pos", type: "i32", access: "read" });
  if (passName === "src") bindings.push({ name: "src", type: t, access: "read" });
  bindings.push({ name: "out", type: t, access: "read_write" });
  // Output element (row, column): contiguous rows without a pass, through out's strides with.
  const outA = pass ? "oo + (p_at() + ia) * p_outLast()" : "row * 2u * half + ia";
  const outB = pass ? "oo + (p_at() + ib) * p_outLast()" : "row * 2u * half + ib";
  const copy = pass
    ? `
  if (i >= p_pairs()) {
    let k = i - p_pairs();
    let dp = p_passWidth();
    let prow = k / (dp / ${G}u);
    let col0 = (k % (dp / ${G}u)) * ${G}u;
    var prem = prow;
    var ao = p_passOffset();
    var co = p_outOffset();
    for (var d = i32(p_outerRank()) - 1; d >= 0; d--) {
      let dim = p_outer(u32(d));
      let cd = prem % dim;
      ao += cd * p_passStrides(u32(d));
      co += cd * p_outStrides(u32(d));
      prem /= dim;
    }
    for (var g = 0u; g < ${G}u; g++) {
      let col = col0 + g;
      let oc = select(col, col + 2u * half, col >= p_at());
      out[co + oc * p_outLast()] = ${passName}[ao + col * p_passLast()];
    }
    return;
  }`
    : "";
  const k = kernel({
    name: `${pass ? "rope_cat" : "rope"}_${byTensor ? "pos" : "offset"}`,
    bindings,
    workgroupSize: [WG],
    params: pass ? ROPE_CAT : ROPE,
    pairable: true,
    prelude: TRIG_WGSL,
    body: `
  let i = ${linearId(WG)};
  let half = p_half();
  if (i >= p_pairs()${pass ? " + p_copies()" : ""}) { return; }${copy}
  let j = i % half;
  let row = i / half;
  var rem = row;
  var xo = p_xOffset();
  var po = 0u;${pass ? "\n  var oo = p_outOffset();" : ""}
  for (var d = i32(p_outerRank()) - 1; d >= 0; d--) {
    let dim = p_outer(u32(d));
    let c = rem % dim;
    rem /= dim;
    xo += c * p_xStrides(u32(d));
    po += c * p_posStrides(u32(d));${pass ? "\n    oo += c * p_outStrides(u32(d));" : ""}
  }
  let p = ${byTensor ? "f32(pos[po + u32(p_pos())])" : "f32(p_pos() + i32(po))"};
  let sc = mg_sincos(p * inv[p_invOffset() + j]);
  let f = p_factor();
  let c = sc.y * f;
  let s = p_sign() * (sc.x * f);
  let ia = j * p_step();
  let ib = ia + p_partner();
  let ls = p_lastStride();
  let xa = f32(x[xo + ia * ls]);
  let xb = f32(x[xo + ib * ls]);
  out[${outA}] = ${t}(xa * c - xb * s);
  out[${outB}] = ${t}(xa * s + xb * c);`,
  });
  const bufs = [xBuf, invFreq.storage(op).buf];
  if (byTensor) bufs.push(positions.storage(op).buf);
  if (passName === "src") bufs.push(passBuf!);
  bufs.push(out.storage(op).buf);
  dispatch(k, bufs, words, grid1d(nPairs + copies, WG));
  return out;
}

/** Checks rope's arguments; returns the inv_freq table (`owned`: made here) and the options. */
export function ropeArgs(
  op: string,
  x: Tensor,
  positions: number | Tensor,
  thetaOrInvFreq: number | Tensor,
  options: RopeOptions,
): { inv: Tensor; owned: boolean; interleaved: boolean; factor: number } {
  if (!(x instanceof Tensor)) throw new MoongradError(op, "x must be a Tensor");
  x.storage(op);
  if (!isFloat(x.dtype) || x.rank < 2 || x.shape[x.rank - 1] % 2 !== 0) {
    throw new MoongradError(
      op,
      `x must be f32/f16 [..., T, d] with d even, got ${x.dtype} ${fmtShape(x.shape)}`,
    );
  }
  const interleaved = options.interleaved ?? true;
  const factor = options.attentionFactor ?? 1;
  if (typeof interleaved !== "boolean") {
    throw new MoongradError(op, `options.interleaved must be a boolean, got ${interleaved}`);
  }
  if (typeof factor !== "number" || !Number.isFinite(factor)) {
    throw new MoongradError(
      op,
      `options.attentionFactor must be a finite number, got ${factor}`,
    );
  }
  if (positions instanceof Tensor) {
    positions.storage(op);
    if (positions.dtype !== "i32") {
      throw new MoongradError(
        op,
        `positions must be an i32 tensor, got ${positions.dtype} ${fmtShape(positions.shape)}`,
      );
    }
  } else if (!Number.isInteger(positions) || Math.abs(positions) >= 2 ** 31) {
    throw new MoongradError(op, `the position offset must be an integer, got ${positions}`);
  }
  const d = x.shape[x.rank - 1];
  let inv: Tensor;
  if (thetaOrInvFreq instanceof Tensor) {
    inv = thetaOrInvFreq;
    inv.storage(op);
    if (inv.dtype !== "f32" || inv.rank !== 1 || inv.shape[0] !== d / 2 || !inv.isContiguous) {
      throw new MoongradError(
        op,
        `inv_freq must be a contiguous f32 [${d / 2}] tensor for d = ${d}, got ${inv.dtype} ${
          fmtShape(inv.shape)
        }`,
      );
    }
  } else {
    inv = tensor(ropeInvFreq(d, thetaOrInvFreq));
  }
  return { inv, owned: inv !== thetaOrInvFreq, interleaved, factor };
}

/**
 * Rotates pairs of the last axis of `x` [..., T, d] by angle p·inv_freq_i and scales them by
 * `options.attentionFactor` (default 1): interleaved pairs (x[2i], x[2i+1]) by default, or
 * half-split pairs (x[i], x[i + d/2]) with `interleaved: false`. `positions` is a start offset
 * (row t of the T axis has position offset + t) or an i32 tensor broadcasting to x's shape
 * without its last axis ([T], [B, T] for x [B, T, d], [T, 1] for x [T, H, d], ...).
 * `thetaOrInvFreq` is θ (HF `rope_theta`: inv_freq_i = θ^(−2i/d)) or a precomputed f32
 * inv_freq tensor [d/2] (`ropeInvFreq`, or YaRN's from nn/rope.ts). f32 or f16 (computed in
 * f32); output contiguous. Differentiable in x (the backward applies f·rotation by −angle).
 * @example
 * ```ts
 * const q = mg.randn([1, 2, 5, 8]); // [B, H, T, d_r]
 * const a = rope(q, 0, 10000); // interleaved pairs, positions 0..4
 * const b = rope(q, 100, 10000, { interleaved: false }); // pairs (i, i + 4), positions 100..104
 * ```
 */
export function rope(
  x: Tensor,
  positions: number | Tensor,
  thetaOrInvFreq: number | Tensor,
  options: RopeOptions = {},
): Tensor {
  const { inv, owned, interleaved, factor } = ropeArgs(
    "rope",
    x,
    positions,
    thetaOrInvFreq,
    options,
  );
  const out = rotate(x, positions, inv, 1, interleaved, factor);
  const saved = positions instanceof Tensor ? [inv, positions] : [inv];
  record(out, "rope", [x], (g, _needs, [si, sp]) => {
    return [rotate(g, sp ?? (positions as number), si, -1, interleaved, factor)];
  }, saved);
  if (owned) inv.dispose();
  return out;
}

/**
 * concat([pass, rope(x)], -1) in one dispatch: `pass` [..., dp] copied into the first dp
 * columns and x [..., T, d] rotated (as `rope`, same arguments) into the last d; `pass` and
 * x share their outer shape and may be any strided views (MLA's q_nope and q_rope slices of
 * one projection, or k_nope and the shared k_rope broadcast over the heads). Backward is one
 * dispatch too: the pass gradient is a view of the output gradient's first dp columns, x's
 * the inverse rotation of the rest. Saves the rope output, the two concat copies and their
 * backward copies (tiny-K2 step: 16 forward and 12 backward dispatches).
 * @example
 * ```ts
 * const qh = mg.randn([1, 2, 5, 24]); // [B, H, T, d_nope + d_rope]
 * const q = ropeConcat(qh.slice(3, 0, 16), qh.slice(3, 16, 24), 0, 10000); // [1, 2, 5, 24]
 * ```
 */
export function ropeConcat(
  pass: Tensor,
  x: Tensor,
  positions: number | Tensor,
  thetaOrInvFreq: number | Tensor,
  options: RopeOptions = {},
): Tensor {
  const op = "ropeConcat";
  if (!(pass instanceof Tensor)) throw new MoongradError(op, "pass must be a Tensor");
  pass.storage(op);
  const { inv, owned, interleaved, factor } = ropeArgs(op, x, positions, thetaOrInvFreq, options);
  if (
    pass.dtype !== x.dtype || pass.rank !== x.rank ||
    pass.shape.some((d, i) => i < x.rank - 1 && d !== x.shape[i])
  ) {
    if (owned) inv.dispose();
    throw new MoongradError(
      op,
      `pass ${pass.dtype} ${fmtShape(pass.shape)} must have x's dtype and shape but the last ` +
        `axis (x is ${x.dtype} ${fmtShape(x.shape)})`,
    );
  }
  const out = rotate(x, positions, inv, 1, interleaved, factor, pass);
  const dp = pass.shape[pass.rank - 1];
  const d = x.shape[x.rank - 1];
  const saved = positions instanceof Tensor ? [inv, positions] : [inv];
  record(out, op, [pass, x], (g, needs, [si, sp]) => {
    const outer = g.shape.slice(0, -1);
    const gPass = needs[0] ? g.view([...outer, dp], g.strides, g.offset) : null;
    let gx: Tensor | null = null;
    if (needs[1]) {
      const tail = g.view([...outer, d], g.strides, g.offset + dp * g.strides[g.rank - 1]);
      gx = rotate(tail, sp ?? (positions as number), si, -1, interleaved, factor);
      tail.dispose();
    }
    return [gPass, gx];
  }, saved);
  if (owned) inv.dispose();
  return out;
}
