/**
 * The CPU adapters' large matmul: operands packed into rgba32float textures, then a tiled
 * product that reads them with `textureLoad`.
 *
 * Why: Mesa's llvmpipe (lavapipe 22.3, the CI adapter) turns every storage-buffer read inside
 * control flow into a scalar loop over the 8 SIMD lanes with a bounds branch per lane, so the
 * storage kernel of ops/matmul.ts is bound by its reads (bench/load_probe.ts); a texel fetch
 * is one vector gather. Measured on lavapipe at 1024³ f32: a raw-WGSL 16×8-per-thread product
 * 78 ms with texture operands, 191 ms with storage reads; `mg.matmul` 135 ms before this path,
 * 64–83 ms with it (bench/RESULTS.md, stop 19).
 *
 * How: `C = A·B` (+ D) per matrix of a batch, for C [M, N] with A [M, K] and B [K, N] read
 * through any strides (batch strides 0 broadcast); ops/gram.ts uses the same kernel for X·Xᵀ.
 * 1. A goes in as texels (x = k/4, y = m) and B as texels (x = n/4, y = k), batches stacked
 *    along y: `copyBufferToTexture` for row-major rows of a multiple of 64 floats (padding
 *    left stale where only unstored outputs read it), else `matmul_pack`, zero past the matrix.
 * 2. `matmul_texture`: each thread owns TM rows × 4·TN4 columns of C in vec4 registers and
 *    walks k four at a time: TM texels of A and 4·TN4 of B per step, 16·TM·TN4 FMAs. Each
 *    output element is the f32 fma chain over k = 0, 1, … K−1 from 0, then + D when
 *    accumulating (rounded once more, as `add` does).
 * Used on fallback (CPU) adapters under the default tile configuration, for f32 products of
 * at least TEXTURE_MATMUL.minWork multiply-adds whose textures fit maxTextureDimension2D: up
 * to 3 launches instead of 1 (the packs), so smaller products keep the storage kernel (in the
 * tiny K2 step, lm_head's and Newton–Schulz's products take this path). Costs: moving
 * (M·K + K·N)·4 bytes into textures per product.
 */
import { deviceInfo, gpuDevice } from "../core/device.ts";
import { kernel, type KernelDef, kernelFor } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { copyToTexture, dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { acquireTexture, type GpuTex, releaseTexture } from "../core/textures.ts";
import { grid1d } from "./grid.ts";

/**
 * The texture path's tiles as data: workgroup size, rows per thread (tm) and vec4 columns per
 * thread (tn4), and the least work (M·N·K) it is used for. 16 × 16 per thread measured best
 * at 1024³ on lavapipe with 32 × 8 (30 GFLOP/s each; 16 × 8 27.5, 8 × 16 21.3, 4 × 8 14.5).
 */
export const TEXTURE_MATMUL = Object.freeze({ wg: 64, tm: 16, tn4: 4, minWork: 2 ** 23 });

/** One operand: its tensor and the element offset and strides of its [rows, cols] view. */
export interface TextureOperand {
  /** The tensor whose storage holds the operand. */
  t: Tensor;
  /** Element offset of [0, 0]. */
  offset: number;
  /** Element stride between rows. */
  rowStride: number;
  /** Element stride between columns. */
  colStride: number;
}

let enabled: boolean | null = null;

/**
 * Forces the texture path on (true, for any f32 product the textures fit), off (false), or
 * back to the default (null: CPU adapters, large products); returns the previous setting.
 * Tests compare both paths; not part of the public API.
 */
export function setMatmulTextures(on: boolean | null): boolean | null {
  const previous = enabled;
  enabled = on;
  return previous;
}

/**
 * Whether a product of these sizes (`batches` matrices) takes the texture path
 * (`defaultTiles`: no tile override is set).
 */
export function usesTextures(
  M: number,
  N: number,
  K: number,
  defaultTiles: boolean,
  batches = 1,
): boolean {
  const on = enabled ??
    (defaultTiles && deviceInfo().isFallbackAdapter &&
      batches * M * N * K >= TEXTURE_MATMUL.minWork);
  if (!on) return false;
  const { tm, tn4 } = TEXTURE_MATMUL;
  const most = gpuDevice("matmul").limits.maxTextureDimension2D;
  const k4 = Math.ceil(K / 4);
  return k4 <= most && batches * Math.ceil(M / tm) * tm <= most && batches * 4 * k4 <= most &&
    Math.ceil(N / (4 * tn4)) * tn4 <= most;
}

const PACK = params("matmul_pack", {
  rows: "u32",
  cols: "u32",
  width: "u32",
  rowsPad: "u32",
  texels: "u32",
  offset: "u32",
  rowStride: "u32",
  colStride: "u32",
  batchStride: "u32",
});

const PRODUCT = params("matmul_texture", {
  M: "u32",
  N: "u32",
  K4: "u32",
  tilesN: "u32",
  tilesPerBatch: "u32",
  threads: "u32",
  aRows: "u32",
  offC: "u32",
  offD: "u32",
  dBatch: "u32",
  alpha: "f32",
  beta: "f32",
  gamma: "f32",
});

/**
 * Writes operand `o` ([batches][rows, cols]; batch b at offset + b·batchStride) into texture
 * `dst`: batch b, row r and columns 4x…4x+3 at texel (x, b·rowsPad + r), zero outside.
 */
function pack(
  o: TextureOperand,
  rows: number,
  cols: number,
  rowsPad: number,
  batchStride: number,
  dst: GpuTex,
  allowStaleRows: boolean,
): void {
  // Row-major rows of a multiple of 64 floats at a 16-byte offset: a copy per batch (padding
  // rows and texels keep stale values; they only reach outputs the product does not store,
  // so `rows` must equal `rowsPad` for B, whose padding rows would enter every sum).
  const batches = dst.height / rowsPad;
  if (
    o.colStride === 1 && o.rowStride === cols && cols % 64 === 0 && o.offset % 4 === 0 &&
    (batches === 1 || batchStride % 4 === 0) && (rows === rowsPad || allowStaleRows)
  ) {
    const buf = o.t.storage("matmul").buf;
    for (let b = 0; b < batches; b++) {
      const at = (o.offset + b * batchStride) * 4;
      copyToTexture(buf, at, cols * 4, cols / 4, rows, dst, b * rowsPad);
    }
    return;
  }
  const WG = 64;
  const k = kernel({
    name: "matmul_pack",
    bindings: [
      { name: "src", type: "f32", access: "read" },
      { name: "dst", type: "f32", access: "read_write", kind: "storage_texture" },
    ],
    workgroupSize: [WG],
    params: PACK,
    body: `
  let i = (wid.y * nwg.x + wid.x) * ${WG}u + lidx;
  if (i >= p_texels()) { return; }
  let w = p_width();
  let x = i % w;
  let y = i / w;
  let row = y % p_rowsPad();
  var v = vec4<f32>(0.0);
  if (row < p_rows()) {
    let base = p_offset() + (y / p_rowsPad()) * p_batchStride() + row * p_rowStride();
    for (var q = 0u; q < 4u; q++) {
      let c = x * 4u + q;
      if (c < p_cols()) { v[q] = src[base + c * p_colStride()]; }
    }
  }
  textureStore(dst, vec2<u32>(x, y), v);`,
  });
  const texels = dst.width * dst.height;
  dispatch(
    k,
    [o.t.storage("matmul").buf, dst],
    PACK.pack({
      rows,
      cols,
      width: dst.width,
      rowsPad,
      texels,
      offset: o.offset,
      rowStride: o.rowStride,
      colStride: o.colStride,
      batchStride,
    }),
    grid1d(texels, WG),
  );
}

/** What the product's epilogue does with the accumulated A·B (see `productKernel`). */
type Epilogue = "plain" | "add" | "gram" | "gramD";

/**
 * The product kernel. Epilogues: "plain" C = A·B; "add" C = D + A·B; "gram" C = α·A·B + γ·I
 * and "gramD" C = α·A·B + β·D + γ·I for a symmetric result (ops/gram.ts): only tiles on or
 * above the diagonal run, each writing its mirror.
 */
function productKernel(epilogue: Epilogue) {
  return kernelFor(`matmul_texture|${epilogue}`, () => productDef(epilogue));
}

/** The definition of `productKernel`'s kernel. */
function productDef(epilogue: Epilogue): KernelDef {
  const { wg, tm, tn4 } = TEXTURE_MATMUL;
  const gram = epilogue === "gram" || epilogue === "gramD";
  const hasD = epilogue === "add" || epilogue === "gramD";
  const acc = (i: number, j: number) => `c${i}_${j}`;
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn4; j++) lines.push(`  var ${acc(i, j)} = vec4<f32>(0.0);`);
  }
  lines.push("  for (var k4 = 0u; k4 < p_K4(); k4++) {");
  for (let i = 0; i < tm; i++) {
    lines.push(`    let a${i} = textureLoad(At, vec2<u32>(k4, ay + ${i}u), 0);`);
  }
  for (let kk = 0; kk < 4; kk++) {
    for (let j = 0; j < tn4; j++) {
      lines.push(
        `    let b${kk}_${j} = textureLoad(Bt, vec2<u32>(n4 + ${j}u, by + k4 * 4u + ${kk}u), 0);`,
      );
    }
  }
  // Per output element: the fma chain over k in order (kk inner, k4 outer).
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn4; j++) {
      for (let kk = 0; kk < 4; kk++) {
        lines.push(`    ${acc(i, j)} = fma(vec4<f32>(a${i}[${kk}]), b${kk}_${j}, ${acc(i, j)});`);
      }
    }
  }
  lines.push("  }");
  const store = (v: string) => {
    if (!gram) return hasD ? `C[cb + at] = D[db + at] + ${v};` : `C[cb + at] = ${v};`;
    // As ops/gram.ts's epilogue: α·acc, + β·D, + γ on the diagonal; the mirror too.
    return `var g = p_alpha() * ${v};${hasD ? " g += p_beta() * D[db + at];" : ""}
      if (m == n) { g += p_gamma(); }
      C[cb + at] = g; C[cb + n * N + m] = g;`;
  };
  for (let i = 0; i < tm; i++) {
    lines.push(`  if (m0 + ${i}u < M) {`);
    for (let j = 0; j < tn4; j++) {
      for (let q = 0; q < 4; q++) {
        const keep = gram ? " && (mt != nt || m <= n)" : "";
        lines.push(
          `    { let m = m0 + ${i}u; let n = (n4 + ${j}u) * 4u + ${q}u; let at = m * N + n;` +
            ` if (n < N${keep}) { ${store(`${acc(i, j)}[${q}]`)} } }`,
        );
      }
    }
    lines.push("  }");
  }
  return {
    name: gram ? "gram_texture" : "matmul_texture",
    bindings: [
      { name: "C", type: "f32", access: "read_write" },
      ...(hasD ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      { name: "At", type: "f32", access: "read", kind: "texture" },
      { name: "Bt", type: "f32", access: "read", kind: "texture" },
    ],
    workgroupSize: [wg],
    params: PRODUCT,
    body: `
  let t = (wid.y * nwg.x + wid.x) * ${wg}u + lidx;
  if (t >= p_threads()) { return; }
  let M = p_M();
  let N = p_N();
  let bi = t / p_tilesPerBatch();
  let r = t % p_tilesPerBatch();
  let mt = r / p_tilesN();
  let nt = r % p_tilesN();${gram ? "\n  if (nt < mt) { return; }" : ""}
  let m0 = mt * ${tm}u;
  let n4 = nt * ${tn4}u;
  let ay = bi * p_aRows() + m0;
  let by = bi * 4u * p_K4();
  let cb = p_offC() + bi * M * N;
  let db = p_offD() + bi * p_dBatch();
${lines.join("\n")}`,
  };
}

/** A product's operands, shapes and batching, as `texturedProduct` takes them. */
export interface TexturedProblem {
  /** Rows of C and A. */
  M: number;
  /** Columns of C and B. */
  N: number;
  /** The inner size. */
  K: number;
  /** Matrices in the batch (1: none). */
  batches: number;
  /** A [M, K] per batch, `aBatchStride` elements apart (0: broadcast). */
  a: TextureOperand;
  /** See `a`. */
  aBatchStride: number;
  /** B [K, N] per batch, `bBatchStride` elements apart (0: broadcast). */
  b: TextureOperand;
  /** See `b`. */
  bBatchStride: number;
}

/**
 * Records out = a·b (+ prior) through textures, per batch: `out` a new contiguous f32
 * [batches, M, N], `prior` (contiguous, shaped like out) or null. The caller checked
 * `usesTextures`. With `gram` (M = N and b = aᵀ, so the result is symmetric): out = α·a·b
 * + β·d + γ·I with d contiguous [batches, M, M] or null, upper tiles only, mirrored.
 */
export function texturedProduct(
  p: TexturedProblem,
  out: Tensor,
  prior: Tensor | null,
  gram?: { alpha: number; beta: number; gamma: number; d: Tensor | null },
): void {
  const { tm, tn4, wg } = TEXTURE_MATMUL;
  const { M, N, K, batches } = p;
  const K4 = Math.ceil(K / 4);
  const tilesM = Math.ceil(M / tm);
  const tilesN = Math.ceil(N / (4 * tn4));
  const at = acquireTexture(K4, batches * tilesM * tm);
  const bt = acquireTexture(tilesN * tn4, batches * 4 * K4);
  try {
    pack(p.a, M, K, tilesM * tm, p.aBatchStride, at, true);
    pack(p.b, K, N, 4 * K4, p.bBatchStride, bt, false);
    const threads = batches * tilesM * tilesN;
    const d = gram ? gram.d : prior;
    const epilogue: Epilogue = gram ? (d ? "gramD" : "gram") : d ? "add" : "plain";
    const bufs = [out.storage("matmul").buf, ...(d ? [d.storage("matmul").buf] : []), at, bt];
    dispatch(
      productKernel(epilogue),
      bufs,
      PRODUCT.pack({
        M,
        N,
        K4,
        tilesN,
        tilesPerBatch: tilesM * tilesN,
        threads,
        aRows: tilesM * tm,
        offC: out.offset,
        offD: d?.offset ?? 0,
        dBatch: M * N,
        alpha: gram?.alpha ?? 1,
        beta: gram?.beta ?? 0,
        gamma: gram?.gamma ?? 0,
      }),
      grid1d(threads, wg),
    );
  } finally {
    releaseTexture(at);
    releaseTexture(bt);
  }
}
