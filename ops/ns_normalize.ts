/**
 * Newton–Schulz's input normalisation: X = G / (‖G‖_F + ε) per matrix of a batch, optionally
 * transposed (the normalising copy absorbs the transpose Newton–Schulz needs for tall
 * matrices). Two dispatches: a sum of squares per matrix (one workgroup each: a strided loop,
 * then a tree in workgroup memory), then one elementwise scale-and-copy.
 *
 * Cost: reads G twice and writes X once (12 B/element), O(A·B) next to the O(A²·B) of each
 * Newton–Schulz iteration (bench/newton_schulz_bench.ts: 5 steps on 256×256 take ~264 ms on
 * llvmpipe, the normalisation a small part of it).
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** Sum of squares: elements per matrix, offset of G, matrices. */
const NS_SUMSQ = params("ns_sumsq", { len: "u32", offset: "u32", matrices: "u32" });
/** Normalise: elements, offset of G, the matrix shape, transpose flag, ε. */
const NS_NORMALIZE = params("ns_normalize", {
  n: "u32",
  offset: "u32",
  A: "u32",
  B: "u32",
  transpose: "u32",
  eps: "f32",
});

/**
 * Per-matrix Frobenius normalisation for Newton–Schulz: `g` is a contiguous f32
 * [batch, A, B]; returns X = G / (‖G‖_F + eps) per matrix, as [batch, A, B], or transposed
 * to [batch, B, A] when `transpose` is set (the normalising copy absorbs the transpose).
 */
export function frobeniusNormalize(g: Tensor, eps: number, transpose: boolean): Tensor {
  if (g.rank !== 3) {
    throw new MoongradError("newtonSchulz", `expected [batch, A, B], got ${fmtShape(g.shape)}`);
  }
  const [nb, A, B] = g.shape;
  needContiguousF32("newtonSchulz", "input", g, nb * A * B);
  const out = Tensor.empty(transpose ? [nb, B, A] : [nb, A, B], "f32");
  if (out.size === 0) return out;
  const ss = Tensor.empty([nb], "f32");
  // Sum of squares: one workgroup per matrix, a strided loop then a tree in workgroup memory.
  const red = kernel({
    name: "ns_sumsq",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "S", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: NS_SUMSQ,
    prelude: `var<workgroup> part: array<f32, ${WG}>;`,
    body: `
  let b = wid.y * nwg.x + wid.x;
  let len = p_len();
  let base = p_offset() + b * len;
  var acc = 0.0;
  for (var i = lidx; i < len; i += ${WG}u) { let v = G[base + i]; acc = fma(v, v, acc); }
  part[lidx] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lidx < s) { part[lidx] += part[lidx + s]; }
    workgroupBarrier();
  }
  if (lidx == 0u && b < p_matrices()) { S[b] = part[0]; }`,
  });
  const gbuf = g.storage("newtonSchulz").buf;
  const sbuf = ss.storage("newtonSchulz").buf;
  dispatch(
    red,
    [gbuf, sbuf],
    NS_SUMSQ.pack({ len: A * B, offset: g.offset, matrices: nb }),
    grid1d(nb, 1),
  );
  const scale = kernel({
    name: "ns_normalize",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "S", type: "f32", access: "read" },
      { name: "X", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: NS_NORMALIZE,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let A = p_A(); let B = p_B();
  let b = i / (A * B);
  let r = i % (A * B);
  var src = i;
  if (p_transpose() != 0u) {
    // X[b, c, a] = G[b, a, c]: i walks the output [B, A] row-major.
    let c = r / A; let a = r % A;
    src = b * A * B + a * B + c;
  }
  X[i] = G[p_offset() + src] / (sqrt(S[b]) + p_eps());`,
  });
  const n = out.size;
  const words = NS_NORMALIZE.pack({ n, offset: g.offset, A, B, transpose, eps });
  dispatch(scale, [gbuf, sbuf, out.storage("newtonSchulz").buf], words, grid1d(n, WG));
  ss.dispose();
  return out;
}
