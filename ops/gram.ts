/**
 * The symmetric rank-k ("gram") product of Newton–Schulz with a fused epilogue:
 * C = α·X·Xᵀ + β·D + γ·I per matrix of a batch. Only the tiles on or above the diagonal are
 * computed, each off-diagonal tile also writing its mirror: about half the multiply-adds of a
 * general product (R²·K instead of 2·R²·K flops). Sizes that are multiples of 4 use a vec4
 * register-tiled kernel reading X along k and a transposed copy of X (or X itself when it is
 * symmetric) along j; other sizes use a scalar 16×16-tile kernel.
 *
 * Cost: O(R²·K) multiply-adds plus an O(R·K) transpose copy; measured in
 * bench/newton_schulz_bench.ts (5 Newton–Schulz steps on 256×256: ~264 ms, 1.9 GFLOP/s on
 * llvmpipe).
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";
import { type TexturedProblem, texturedProduct, textureLayout } from "./matmul_texture.ts";

const WG = 256;

/** Gram: sizes, offsets of X, D and Xᵀ (or X), the epilogue's α, β, γ. */
const GRAM = params("gram", {
  R: "u32",
  K: "u32",
  xOffset: "u32",
  dOffset: "u32",
  bOffset: "u32",
  alpha: "f32",
  beta: "f32",
  gamma: "f32",
});
/** The transposed copy: elements, sizes, offset of X. */
const GRAM_TRANSPOSE = params("gram_transpose", { n: "u32", R: "u32", K: "u32", offset: "u32" });

/** Tiling of the gram kernel's vec4 path: a (wgY·tm)×(wgX·tn) tile per workgroup, square. */
export interface GramConfig {
  /** Threads per workgroup along columns. */
  wgX: number;
  /** Threads per workgroup along rows. */
  wgY: number;
  /** Rows per thread (register tile height). */
  tm: number;
  /** Columns per thread, a multiple of 4 (register tile width, as vec4 groups). */
  tn: number;
}

/**
 * Default gram tiling: 64×64 tiles of 8×16-element register blocks, the shape the CPU matmul
 * config found fastest on llvmpipe (vec4 FMAs along a row of B).
 */
export const GRAM_CONFIG: Readonly<GramConfig> = Object.freeze({ wgX: 4, wgY: 8, tm: 8, tn: 16 });

/** Options of `gram`: the epilogue terms and a precomputed transpose. */
export interface GramOptions {
  /** Scale of X·Xᵀ (default 1). */
  alpha?: number;
  /** A contiguous symmetric [batch, R, R] term added with weight `beta`. */
  d?: Tensor | null;
  /** Weight of `d` (default 0). */
  beta?: number;
  /** Added to the diagonal (default 0). */
  gamma?: number;
  /** X is itself symmetric (square), so Xᵀ = X and no transposed copy is needed. */
  symmetricInput?: boolean;
  /** Tiling of the vec4 path. */
  config?: GramConfig;
}

/**
 * Symmetric rank-k product with a fused epilogue, per matrix of a batch:
 * C = α·X·Xᵀ + β·D + γ·I for a contiguous f32 `x` [batch, R, K] and an optional contiguous
 * symmetric `d` [batch, R, R]. Only the tiles on or above the diagonal are computed; each
 * off-diagonal tile also writes its mirror, so about half the multiply-adds of a general
 * product. When R and K are multiples of 4 the kernel reads rows of X as vec4 along k and
 * rows of Xᵀ as vec4 along j (vec4 FMAs); Xᵀ is X itself when `symmetricInput`, else a
 * transposed copy made here (O(R·K), small next to the O(R²·K) product). Other sizes use a
 * scalar kernel that reads both operands from X along k.
 */
export function gram(x: Tensor, options: GramOptions = {}): Tensor {
  if (x.rank !== 3) {
    throw new MoongradError("gram", `expected x [batch, R, K], got ${fmtShape(x.shape)}`);
  }
  const [nb, R, K] = x.shape;
  needContiguousF32("gram", "x", x, nb * R * K);
  const d = options.d ?? null;
  if (d) needContiguousF32("gram", "d", d, nb * R * R);
  if (options.symmetricInput && R !== K) {
    throw new MoongradError("gram", `symmetricInput needs a square x, got ${fmtShape(x.shape)}`);
  }
  const out = Tensor.empty([nb, R, R], "f32");
  if (out.size === 0) return out;
  // CPU adapters: X and Xᵀ in textures (Xᵀ = X when X is symmetric; otherwise X stored as it
  // lies, read as Bᵀ), upper tiles, mirrored.
  const rowMajor = { t: x, offset: x.offset, rowStride: K, colStride: 1 };
  const tp: TexturedProblem = {
    M: R,
    N: R,
    K,
    batches: nb,
    a: rowMajor,
    aBatchStride: R * K,
    b: options.symmetricInput ? rowMajor : { ...rowMajor, rowStride: 1, colStride: K },
    bBatchStride: R * K,
  };
  const layout = K > 0 ? textureLayout(tp, options.config === undefined) : null;
  if (layout) {
    texturedProduct(tp, layout, out, null, {
      alpha: options.alpha ?? 1,
      beta: options.beta ?? 0,
      gamma: options.gamma ?? 0,
      d,
    });
    return out;
  }
  const vec = K % 4 === 0 && R % 4 === 0 && x.offset % 4 === 0;
  let xt: Tensor | null = null;
  if (vec && !options.symmetricInput) xt = transposeCopy(x);
  const b = xt ?? x;
  // A tensor bound twice would be two overlapping writable ranges (all bindings are
  // read_write; core/kernel.ts), so X's other roles (Xᵀ = X, D = X in Newton–Schulz) read
  // from X's binding instead.
  const xbuf = x.storage("gram").buf;
  const bIsA = vec && b.storage("gram").buf === xbuf;
  const dIsA = d !== null && d.storage("gram").buf === xbuf;
  const k = vec
    ? gramVecKernel(options.config ?? GRAM_CONFIG, d !== null, bIsA, dIsA)
    : gramScalarKernel(d !== null, dIsA);
  const c = options.config ?? GRAM_CONFIG;
  const T = vec ? c.wgY * c.tm : 16;
  const tiles = Math.ceil(R / T);
  const words = GRAM.pack({
    R,
    K,
    xOffset: x.offset,
    dOffset: d?.offset ?? 0,
    bOffset: b.offset,
    alpha: options.alpha ?? 1,
    beta: options.beta ?? 0,
    gamma: options.gamma ?? 0,
  });
  const bufs = [xbuf];
  if (vec && !bIsA) bufs.push(b.storage("gram").buf);
  if (d && !dIsA) bufs.push(d.storage("gram").buf);
  bufs.push(out.storage("gram").buf);
  dispatch(k, bufs, words, [tiles, tiles, nb]);
  xt?.dispose();
  return out;
}

/** A contiguous [batch, K, R] copy of a contiguous [batch, R, K] tensor. */
function transposeCopy(x: Tensor): Tensor {
  const [nb, R, K] = x.shape;
  const out = Tensor.empty([nb, K, R], "f32");
  const k = kernel({
    name: "gram_transpose",
    bindings: [
      { name: "X", type: "f32", access: "read" },
      { name: "Y", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: GRAM_TRANSPOSE,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let R = p_R(); let K = p_K();
  let b = i / (R * K); let r = i % (R * K);
  let kk = r / R; let row = r % R;
  Y[i] = X[p_offset() + b * R * K + row * K + kk];`,
  });
  const n = out.size;
  dispatch(
    k,
    [x.storage("gram").buf, out.storage("gram").buf],
    GRAM_TRANSPOSE.pack({ n, R, K, offset: x.offset }),
    grid1d(n, WG),
  );
  return out;
}

/**
 * The mirrored epilogue shared by both gram kernels: value v at (i, j), i <= j. `readD` reads
 * element `idx` of D (from D, or from X's binding when D is X).
 */
function gramStore(hasD: boolean, acc: string, readD = (idx: string) => `D[${idx}]`): string {
  return `{
      var v = alpha * ${acc};
      ${hasD ? `v += beta * ${readD("db + i * R + j")};` : ""}
      if (i == j) { v += gamma; }
      C[cb + i * R + j] = v;
      C[cb + j * R + i] = v;
    }`;
}

const GRAM_HEAD = `let ti = wid.x; let tj = wid.y; let bi = wid.z;
  if (ti > tj) { return; }
  let R = p_R(); let K = p_K();
  let cb = bi * R * R;
  let db = p_dOffset() + cb;
  let alpha = p_alpha(); let beta = p_beta(); let gamma = p_gamma();`;

/** Element `idx` of X read through its vec4 binding A. */
const readA4 = (idx: string) => `A[(${idx}) / 4u][(${idx}) % 4u]`;

/**
 * Vec4 gram kernel: A = X rows as vec4 along k, B = Xᵀ rows as vec4 along j. `bIsA`: Xᵀ is X
 * (read through A at B's offset); `dIsA`: D is X (read through A as scalars).
 */
function gramVecKernel(c: GramConfig, hasD: boolean, bIsA = false, dIsA = false) {
  const { wgX, wgY, tm, tn } = c;
  if (wgY * tm !== wgX * tn || tn % 4 !== 0) {
    throw new MoongradError("gram", `tiles must be square with tn % 4 == 0: ${JSON.stringify(c)}`);
  }
  const T = wgY * tm;
  const rows = [...Array(tm).keys()];
  const groups = [...Array(tn / 4).keys()];
  const L: string[] = [GRAM_HEAD];
  L.push(`  let xa = (p_xOffset() + bi * R * K) / 4u;
  let xb = (p_bOffset() + bi * R * K) / 4u;
  let R4 = R / 4u;
  let i0 = ti * ${T}u + (lidx / ${wgX}u) * ${tm}u;
  let j0 = tj * ${T}u + (lidx % ${wgX}u) * ${tn}u;`);
  for (const r of rows) L.push(`  let pa${r} = xa + min(i0 + ${r}u, R - 1u) * (K / 4u);`);
  for (const g of groups) L.push(`  let pb${g} = xb + min(j0 + ${4 * g}u, R - 4u) / 4u;`);
  for (const r of rows) for (const g of groups) L.push(`  var c${r}_${g} = vec4<f32>(0.0);`);
  L.push(`  for (var k = 0u; k < K / 4u; k++) {`);
  for (const r of rows) L.push(`    let a${r} = A[pa${r} + k];`);
  for (let kk = 0; kk < 4; kk++) {
    for (const g of groups) {
      L.push(`    let b${kk}_${g} = ${bIsA ? "A" : "B"}[pb${g} + (4u * k + ${kk}u) * R4];`);
    }
    for (const r of rows) {
      for (const g of groups) {
        L.push(`    c${r}_${g} = fma(vec4<f32>(a${r}.${"xyzw"[kk]}), b${kk}_${g}, c${r}_${g});`);
      }
    }
  }
  L.push("  }");
  for (const r of rows) {
    for (const g of groups) {
      for (let l = 0; l < 4; l++) {
        L.push(`  { let i = i0 + ${r}u; let j = j0 + ${4 * g + l}u;
    if (i < R && j < R && (ti != tj || i <= j)) ${
          gramStore(hasD, `c${r}_${g}.${"xyzw"[l]}`, dIsA ? readA4 : undefined)
        } }`);
      }
    }
  }
  return kernel({
    name: "gram",
    bindings: [
      { name: "A", type: "vec4<f32>", access: "read" },
      ...(bIsA ? [] : [{ name: "B", type: "vec4<f32>", access: "read" as const }]),
      ...(hasD && !dIsA ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      { name: "C", type: "f32", access: "read_write" },
    ],
    workgroupSize: [wgX * wgY],
    params: GRAM,
    body: L.join("\n"),
  });
}

/**
 * Scalar gram kernel for sizes not multiple of 4: 16×16 tiles, 4×4 dots along k per thread.
 * `dIsA`: D is X (read through A).
 */
function gramScalarKernel(hasD: boolean, dIsA = false) {
  const t = 4;
  const idx = [...Array(t).keys()];
  const L: string[] = [GRAM_HEAD];
  L.push(`  let xb = p_xOffset() + bi * R * K;
  let i0 = ti * 16u + (lidx / 4u) * 4u;
  let j0 = tj * 16u + (lidx % 4u) * 4u;`);
  for (const r of idx) L.push(`  let pa${r} = xb + min(i0 + ${r}u, R - 1u) * K;`);
  for (const c of idx) L.push(`  let pb${c} = xb + min(j0 + ${c}u, R - 1u) * K;`);
  for (const r of idx) for (const c of idx) L.push(`  var c${r}_${c} = 0.0;`);
  L.push(`  for (var k = 0u; k < K; k++) {`);
  for (const r of idx) L.push(`    let a${r} = A[pa${r} + k];`);
  for (const c of idx) L.push(`    let b${c} = A[pb${c} + k];`);
  for (const r of idx) {
    for (const c of idx) L.push(`    c${r}_${c} = fma(a${r}, b${c}, c${r}_${c});`);
  }
  L.push("  }");
  for (const r of idx) {
    for (const c of idx) {
      L.push(`  { let i = i0 + ${r}u; let j = j0 + ${c}u;
    if (i < R && j < R && (ti != tj || i <= j)) ${
        gramStore(hasD, `c${r}_${c}`, dIsA ? (idx) => `A[${idx}]` : undefined)
      } }`);
    }
  }
  return kernel({
    name: "gram",
    bindings: [
      { name: "A", type: "f32", access: "read" },
      ...(hasD && !dIsA ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      { name: "C", type: "f32", access: "read_write" },
    ],
    workgroupSize: [16],
    params: GRAM,
    body: L.join("\n"),
  });
}
