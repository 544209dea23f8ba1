/**
 * The CPU adapters' large matmul: operands packed into rgba32float textures, then a tiled
 * product that reads them with `textureLoad`.
 *
 * Why: Mesa's llvmpipe (lavapipe 22.3, the CI adapter) turns every storage-buffer read inside
 * control flow into a scalar loop over the 8 SIMD lanes with a bounds branch per lane, so the
 * storage kernel of ops/matmul.ts is bound by its reads (bench/load_probe.ts); a texel fetch
 * costs less, and a read of a read-only storage texture less again (0.3 ns over a loop step
 * without a read, against 0.8–0.9 ns sampled). Measured on lavapipe at 1024³ f32: a raw-WGSL
 * 16×8-per-thread product 78 ms with texture operands, 191 ms with storage reads; `mg.matmul`
 * 135 ms before this path, 64–83 ms with it (bench/RESULTS.md, stop 19), 46–52 ms once the
 * operands were read as storage textures (stop 25).
 *
 * How: `C = A·B` (+ D) per matrix of a batch, for C [M, N] with A [M, K] and B [K, N] read
 * through any strides (batch strides 0 broadcast); ops/gram.ts uses the same kernel for X·Xᵀ.
 * 1. Each operand goes into a texture as it lies when that makes it a copy
 *    (`copyBufferToTexture`: row-major rows of a multiple of 64 floats; padding left stale
 *    where only unstored outputs read it), else through `matmul_pack` (zero past the matrix):
 *    A as texels (x = k/4, y = m), or Aᵀ (x = m/4, y = k) when A is the transposed view of a
 *    row-major matrix (a weight gradient dW = dCᵀ·X reads dC as it lies); B as (x = n/4,
 *    y = k), or Bᵀ (x = k/4, y = n) for the transposed view of a row-major matrix (a Linear
 *    layer's x·Wᵀ reads W as it lies). Batches stack along y.
 * 2. `matmul_texture`: each thread owns TM rows × 4·TN4 columns of C in vec4 registers and
 *    walks k four at a time (TM texels of A and 4·TN4 of B per step, 16·TM·TN4 FMAs), or one
 *    at a time with Aᵀ (TM/4 + TN4 texels, 4·TM·TN4 FMAs). Each output element is the f32
 *    fma chain over k = 0, 1, … K−1 from 0, then + D when accumulating (rounded once more, as
 *    `add` does): bit-identical to the storage kernels whatever the layout.
 * 3. Mixture-of-Experts grouped products (ops/matmul.ts `Grouping`) use the same kernel:
 *    "rows" (`matmul_texture_rows`: row tiles within one expert, found by `find_tile` as the
 *    storage kernel does, B per expert stacked along y: the experts' forward with W as Bᵀ and
 *    their dX) and "inner" (`matmul_texture_inner`: the expert is the batch and k runs over
 *    its own rows, Aᵀ and B both as they lie: the experts' dW).
 * Operand textures are read as read-only storage textures on the adapters
 * TEXTURE_MATMUL.storageReads names (lavapipe), else sampled (`textureReads`).
 * Used on fallback (CPU) adapters under the default tile configuration, for f32 products of
 * at least TEXTURE_MATMUL.minWork multiply-adds (minWorkCopied when no operand needs a pack)
 * whose textures fit maxTextureDimension2D. Measured on lavapipe (one product per launch,
 * 60 per sync, 2026-12-03): [256, 128]·[128, 128] 0.30 ms with copied operands against 0.40
 * ms for the storage kernel, [512, 128]·[128, 128] 0.52–0.58 against 0.79–0.96, [256, 384]·
 * [384, 128] 0.66–0.84 against 1.19–1.39; the tiny-K2 MoE experts' backward 2.2–2.4 ms per
 * paired storage launch against 0.6–0.9 (dX) + 0.7–0.8 (dW) textured (profiled); the whole
 * tiny-K2 AdamW training step 185–204 against 208–228 ms (interleaved steps, busy machine).
 * A gram (ops/gram.ts) runs one thread per upper tile of its square tile grid, numbered row by
 * row (the lower tiles it mirrors used to hold idle threads in every workgroup): tiny-K2
 * MuonClip optimizer step 322–327 → 236–239 ms (lavapipe, 2026-12-03, medians of 10 steps).
 * With 16-thread workgroups a product of 64 tiles spreads over 4 workgroups (CPU threads)
 * instead of 1; 1024³ is unchanged (61–63 ms either way). Costs: copying or packing
 * (M·K + K·N)·4 bytes into textures per product (4 MB: ~0.1 ms as a copy).
 */
import { deviceInfo, gpuDevice } from "../core/device.ts";
import { kernel, type KernelDef, kernelFor } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { copyToTexture, dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { acquireTexture, type GpuTex, releaseTexture } from "../core/textures.ts";
import { grid1d } from "./grid.ts";
import { findTileWgsl } from "./grouped_tiles.ts";

/**
 * The texture path's tiles as data: workgroup size; the tiles (rows per thread `tm`, vec4
 * columns per thread `tn4`), of which a product takes the first whose `minOutputs` one of its
 * matrices reaches (M·N, batches not counted) and whose `adapter` pattern matches the
 * adapter's description; and the least work (M·N·K) the path is used for: `minWork` when an
 * operand needs a pack launch, `minWorkCopied` when both are copies. Grouped products always
 * take the last (smallest) tile: their row tiles must fit small experts. A tile must be square
 * (tm = 4·tn4) for ops/gram.ts's mirrored tiles.
 *
 * Texel fetches, not the multiply-adds, bound the kernel on lavapipe (1024³: 46 ms as
 * written, 15–22 ms with the fetches hoisted out of the loop), so there larger tiles, which
 * fetch less per multiply-add, win where enough of them keep every CPU thread busy. Raw-kernel
 * times at 1024³, one after the other (lavapipe, 2026-12-03): 16 × 16 per thread 45.9–58.3
 * ms, 32 × 32 36.5–51.5, 64 × 64 39.3–42.5; at 512³ 5.6 against 5.1 ms, at 256³ the same
 * (1.1 ms); `mg.matmul` 1024³ with its wait 59.0–59.7 → 53.0–54.0 ms. Batches of small
 * matrices lose with it (tiny K2's MuonClip step, whose stacked Newton–Schulz products reach
 * 2¹⁸ outputs only summed over the batch: 247 → 293 ms), so the bound is per matrix. Each
 * kernel variant of the large tile takes lavapipe ~6 s to compile (the small one's well
 * under 1 s; Mesa's disk cache keeps it after that), which a 512² product's 0.5 ms gain
 * would take 12 000 calls to repay, so the bound is 1024² outputs; 64 × 64 took 260 s. On
 * SwiftShader (Dawn) the 32 × 32 tile is slower (1024³ 234 → 329–1045 ms) and takes 4×
 * longer to compile, so it is lavapipe's only.
 *
 * `storageReads`: the adapters whose product kernel binds the operand textures as read-only
 * storage textures instead of sampled ones. On lavapipe such a read costs 0.25–0.33 ns over a
 * loop step without a read against 0.8–0.9 ns sampled (bench/load_probe.ts); raw 1024³
 * kernels 40–45 → 33–35 ms (32 × 32) and 48–64 → 31–39 ms (16 × 16), after which the two
 * tiles measure alike inside `mg.matmul` (44–52 ms each); the tiny-K2 training step 8–10 %
 * faster (alternating steps in one process, 2026-12-03). SwiftShader reads them slower (8.6
 * against 7.1 ns), so it keeps sampled reads.
 */
export const TEXTURE_MATMUL = Object.freeze({
  wg: 16,
  tiles: Object.freeze([
    Object.freeze({ tm: 32, tn4: 8, minOutputs: 2 ** 20, adapter: /llvmpipe/i }),
    Object.freeze({ tm: 16, tn4: 4, minOutputs: 0, adapter: /./ }),
  ]),
  minWork: 2 ** 23,
  minWorkCopied: 2 ** 20,
  storageReads: /llvmpipe/i,
});

/**
 * How the product kernel fetches its operands' texels: "storage" binds the operand textures
 * as read-only storage textures (`texture_storage_2d<rgba32float, read>`), "sampled" as
 * `texture_2d<f32>`. TEXTURE_MATMUL.storageReads names the adapters that take "storage";
 * `setTextureReads` overrides it (tests run both on every adapter).
 */
export type TextureReads = "storage" | "sampled";

let readsOverride: TextureReads | null = null;

/**
 * Forces the operand reads of the texture path ("storage" or "sampled"), or back to the
 * adapter's default (null); returns the previous setting. Tests compare both; not part of the
 * public API.
 */
export function setTextureReads(reads: TextureReads | null): TextureReads | null {
  const previous = readsOverride;
  readsOverride = reads;
  return previous;
}

/** The operand reads the texture path uses on this adapter (see TEXTURE_MATMUL.storageReads). */
export function textureReads(): TextureReads {
  return readsOverride ??
    (TEXTURE_MATMUL.storageReads.test(deviceInfo().description) ? "storage" : "sampled");
}

/** One of TEXTURE_MATMUL's tiles: rows and vec4 columns of C per thread. */
export interface TextureTile {
  /** Rows of C per thread (a multiple of 4). */
  tm: number;
  /** vec4 columns of C per thread. */
  tn4: number;
}

/** The tile a product whose matrices have `outputs` elements of C each takes; see TEXTURE_MATMUL. */
export function textureTile(outputs: number, grouped: boolean): TextureTile {
  const { tiles } = TEXTURE_MATMUL;
  const adapter = deviceInfo().description;
  const tile = grouped
    ? tiles[tiles.length - 1]
    : tiles.find((t) => outputs >= t.minOutputs && t.adapter.test(adapter))!;
  return { tm: tile.tm, tn4: tile.tn4 };
}

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
  K: "u32",
  tilesN: "u32",
  tilesPerBatch: "u32",
  threads: "u32",
  aRows: "u32",
  bRows: "u32",
  experts: "u32",
  offC: "u32",
  offD: "u32",
  dBatch: "u32",
  alpha: "f32",
  beta: "f32",
  gamma: "f32",
});

/** Whether operand `o` ([rows, cols] per batch) can be copied into a texture as it is. */
function copyable(o: TextureOperand, cols: number, batches: number, batchStride: number): boolean {
  return o.colStride === 1 && o.rowStride === cols && cols % 64 === 0 && o.offset % 4 === 0 &&
    (batches === 1 || batchStride % 4 === 0);
}

/**
 * Writes operand `x.o` ([batches][rows, cols]; batch b at offset + b·batchStride) into texture
 * `dst`: batch b, row r and columns 4x…4x+3 at texel (x, b·rowsPad + r), zero outside. A copy
 * per batch where `copies(x)` (then `dst` needs storage usage only if the product reads it
 * so), else a `matmul_pack` launch.
 */
function pack(x: OperandTexture, dst: GpuTex): void {
  const { o, rows, cols, rowsPad, batchStride } = x;
  // Row-major rows of a multiple of 64 floats at a 16-byte offset: a copy per batch (padding
  // rows and texels keep stale values; they only reach outputs the product does not store,
  // so `rows` must equal `rowsPad` for B, whose padding rows would enter every sum).
  if (copies(x)) {
    const buf = o.t.storage("matmul").buf;
    for (let b = 0; b < x.batches; b++) {
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
 * How the product kernel reads its operands and splits its work:
 * - `aT`: A's texture holds Aᵀ (texel (m/4, k), rows of k): the loop walks k one at a time
 *   (weight gradients dW = dCᵀ·X read dC as it lies; B is then stored as it is).
 * - `bT`: B's texture holds Bᵀ (texel (k/4, n)): a Linear layer's x·Wᵀ reads W as it lies.
 * - `group`: "rows" (A's rows grouped by expert, B per expert; `find_tile`), "inner" (the
 *   expert is the batch, k runs over its rows only: aT) or "none".
 */
interface TextureVariant {
  tile: TextureTile;
  reads: TextureReads;
  epilogue: Epilogue;
  aT: boolean;
  bT: boolean;
  group: "none" | "rows" | "inner";
}

/**
 * The product kernel. Epilogues: "plain" C = A·B; "add" C = D + A·B; "gram" C = α·A·B + γ·I
 * and "gramD" C = α·A·B + β·D + γ·I for a symmetric result (ops/gram.ts): only tiles on or
 * above the diagonal run, each writing its mirror.
 */
function productKernel(v: TextureVariant) {
  const key = `matmul_texture|${v.tile.tm}x${v.tile.tn4}|${v.reads}|${v.epilogue}|${
    v.aT ? "aT" : "a"
  }|${v.bT ? "bT" : "b"}|${v.group}`;
  return kernelFor(key, () => productDef(v));
}

/** The definition of `productKernel`'s kernel. */
function productDef(v: TextureVariant): KernelDef {
  const { wg } = TEXTURE_MATMUL;
  const { epilogue, aT, bT, group, reads, tile: { tm, tn4 } } = v;
  // A texel of operand `t` at (x, y): storage textures take no mip level.
  const load = (t: string, x: string, y: string) =>
    `textureLoad(${t}, vec2<u32>(${x}, ${y})${reads === "storage" ? "" : ", 0"})`;
  const gram = epilogue === "gram" || epilogue === "gramD";
  const hasD = epilogue === "add" || epilogue === "gramD";
  const acc = (i: number, j: number) => `c${i}_${j}`;
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn4; j++) lines.push(`  var ${acc(i, j)} = vec4<f32>(0.0);`);
  }
  if (aT) {
    // Aᵀ rows are k: per k, tm/4 texels of A and tn4 of B (stored as it is), the fma chain
    // over k in order.
    lines.push("  for (var k = kLo; k < kHi; k++) {");
    for (let i4 = 0; i4 < tm / 4; i4++) {
      lines.push(`    let a${i4} = ${load("At", `mx + ${i4}u`, "ay + k")};`);
    }
    for (let j = 0; j < tn4; j++) {
      lines.push(`    let b${j} = ${load("Bt", `n4 + ${j}u`, "by + k")};`);
    }
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn4; j++) {
        lines.push(
          `    ${acc(i, j)} = fma(vec4<f32>(a${i >> 2}[${i & 3}]), b${j}, ${acc(i, j)});`,
        );
      }
    }
  } else {
    // A's texels hold four k each: per k4, tm texels of A and 4·tn4 of B.
    lines.push("  for (var k4 = 0u; k4 < K4; k4++) {");
    for (let i = 0; i < tm; i++) {
      lines.push(`    let a${i} = ${load("At", "k4", `ay + ${i}u`)};`);
    }
    for (let j = 0; j < tn4; j++) {
      for (let q = 0; q < 4; q++) {
        lines.push(
          bT
            ? `    let b${j}_${q} = ${load("Bt", "k4", `by + (n4 + ${j}u) * 4u + ${q}u`)};`
            : `    let b${q}_${j} = ${load("Bt", `n4 + ${j}u`, `by + k4 * 4u + ${q}u`)};`,
        );
      }
    }
    // B's four columns 4j…4j+3 at k = 4·k4 + kk.
    const bv = (kk: number, j: number) =>
      bT
        ? `vec4<f32>(b${j}_0[${kk}], b${j}_1[${kk}], b${j}_2[${kk}], b${j}_3[${kk}])`
        : `b${kk}_${j}`;
    // Per output element: the fma chain over k in order (kk inner, k4 outer).
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn4; j++) {
        for (let kk = 0; kk < 4; kk++) {
          lines.push(
            `    ${acc(i, j)} = fma(vec4<f32>(a${i}[${kk}]), ${bv(kk, j)}, ${acc(i, j)});`,
          );
        }
      }
    }
  }
  lines.push("  }");
  const store = (v: string) => {
    if (!gram) return hasD ? `C[cb + at] = D[db + at] + ${v};` : `C[cb + at] = ${v};`;
    // As ops/gram.ts's epilogue: α·acc, + β·D, + γ on the diagonal; the mirror too.
    return `var g = alpha * ${v};${hasD ? " g += beta * D[db + at];" : ""}
      g = select(g, g + gamma, m == n);
      C[cb + at] = g; C[cb + n * N + m] = g;`;
  };
  // Parameters read once, not per element (each read is a load the compilers keep).
  if (gram) {
    lines.push(
      `  let alpha = p_alpha();${hasD ? " let beta = p_beta();" : ""} let gamma = p_gamma();`,
    );
  }
  for (let i = 0; i < tm; i++) {
    lines.push(`  if (m0 + ${i}u < mEnd) {`);
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
  // Which tile this thread owns, and where its operands' rows start in the textures.
  const tile = group === "rows"
    ? `
  let nt = t % p_tilesN();
  let gi = find_tile(t / p_tilesN());
  if (gi.w == 0u) { return; }
  let bi = gi.x;
  let m0 = gi.y;
  let mEnd = gi.z;
  let cb = p_offC();
  let db = p_offD();`
    : `
  let bi = t / p_tilesPerBatch();${
      gram
        ? `
  // Upper tiles only (mt ≤ nt), numbered row by row: no thread idles on a lower tile.
  var r = t % p_tilesPerBatch();
  var mt = 0u;
  loop {
    if (r < p_tilesN() - mt) { break; }
    r -= p_tilesN() - mt;
    mt += 1u;
  }
  let nt = mt + r;`
        : `
  let r = t % p_tilesPerBatch();
  let mt = r / p_tilesN();
  let nt = r % p_tilesN();`
    }
  let m0 = mt * ${tm}u;
  let mEnd = M;
  let cb = p_offC() + bi * M * N;
  let db = p_offD() + bi * p_dBatch();`;
  const rowsOfA = aT
    ? `let mx = m0 / 4u;\n  let ay = ${group === "inner" ? "0u" : "bi * p_aRows()"};`
    : group === "rows"
    ? "let ay = m0;"
    : `let ay = bi * p_aRows() + m0;`;
  const kRange = group === "inner"
    ? "let kLo = off[bi];\n  let kHi = off[bi + 1u];"
    : aT
    ? "let kLo = 0u;\n  let kHi = p_K();"
    : "let K4 = (p_K() + 3u) / 4u;";
  const texKind = reads === "storage" ? "storage_texture_read" as const : "texture" as const;
  return {
    name: gram ? "gram_texture" : group === "none" ? "matmul_texture" : `matmul_texture_${group}`,
    bindings: [
      { name: "C", type: "f32", access: "read_write" },
      ...(hasD ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      ...(group !== "none" ? [{ name: "off", type: "u32", access: "read" as const }] : []),
      { name: "At", type: "f32", access: "read", kind: texKind },
      { name: "Bt", type: "f32", access: "read", kind: texKind },
    ],
    workgroupSize: [wg],
    params: PRODUCT,
    prelude: group === "rows" ? findTileWgsl(tm) : "",
    body: `
  let t = (wid.y * nwg.x + wid.x) * ${wg}u + lidx;
  if (t >= p_threads()) { return; }
  let M = p_M();
  let N = p_N();${tile}
  let n4 = nt * ${tn4}u;
  ${rowsOfA}
  let by = ${group === "inner" ? "0u" : "bi * p_bRows()"};
  ${kRange}
${lines.join("\n")}`,
  };
}

/** A product's operands, shapes and batching, as `texturedProduct` takes them. */
export interface TexturedProblem {
  /** Rows of C and A. */
  M: number;
  /** Columns of C and B. */
  N: number;
  /** The inner size (grouped "inner": all rows of every expert). */
  K: number;
  /** Matrices in the batch (1: none; grouped "inner": the experts). */
  batches: number;
  /** A [M, K] per batch, `aBatchStride` elements apart (0: broadcast). */
  a: TextureOperand;
  /** See `a`. */
  aBatchStride: number;
  /** B [K, N] per batch (grouped "rows": per expert), `bBatchStride` elements apart. */
  b: TextureOperand;
  /** See `b`. */
  bBatchStride: number;
  /**
   * Mixture-of-Experts grouping (ops/matmul.ts `Grouping`): "rows" (rows of A and C grouped
   * by expert, B per expert) or "inner" (C per expert, k over the expert's rows), with the
   * contiguous i32 [E + 1] row offsets.
   */
  group?: { mode: "rows" | "inner"; offsets: Tensor; experts: number };
}

/** One operand's texture: what it holds ([rows, cols] per batch), its size and padding. */
interface OperandTexture {
  o: TextureOperand;
  rows: number;
  cols: number;
  /** Rows per batch in the texture (≥ rows). */
  rowsPad: number;
  batches: number;
  batchStride: number;
  width: number;
  /** Padding rows may hold stale values (they only reach outputs that are not stored). */
  staleRows: boolean;
}

/** How `texturedProduct` lays a problem out: operand orientations and textures. */
export interface TextureLayout {
  /** The tile each thread computes. */
  tile: TextureTile;
  aT: boolean;
  bT: boolean;
  a: OperandTexture;
  b: OperandTexture;
  /** Operands that need a pack launch (the others are copied). */
  packs: number;
}

function transposed(o: TextureOperand): TextureOperand {
  return { t: o.t, offset: o.offset, rowStride: o.colStride, colStride: o.rowStride };
}

function copies(x: OperandTexture): boolean {
  return copyable(x.o, x.cols, x.batches, x.batchStride) &&
    (x.rows === x.rowsPad || x.staleRows);
}

/**
 * The texture layout of a product, or null when it keeps the storage kernel: off unless
 * forced or on a CPU adapter under the default tiles (`defaultTiles`), at least
 * TEXTURE_MATMUL.minWork multiply-adds (minWorkCopied when both operands are copied, no pack
 * launch), textures within maxTextureDimension2D. Each operand is stored as it lies when
 * that makes it a copy: Bᵀ for a Linear layer's x·Wᵀ, Aᵀ for a weight gradient dCᵀ·X.
 */
export function textureLayout(p: TexturedProblem, defaultTiles: boolean): TextureLayout | null {
  const { M, N, K, batches } = p;
  const g = p.group?.mode;
  if (K === 0 || M === 0 || N === 0 || batches === 0) return null;
  const tile = textureTile(M * N, g !== undefined);
  const { tm, tn4 } = tile;
  const K4 = Math.ceil(K / 4);
  const tilesM = Math.ceil(M / tm);
  const tilesN = Math.ceil(N / (4 * tn4));
  const E = p.group?.experts ?? 1;
  // Per-batch operand matrices: grouped "rows" has one A and E matrices B; "inner" one A and
  // one B whose rows (k) the experts share.
  const aBatches = g ? 1 : batches;
  const bBatches = g === "rows" ? E : g === "inner" ? 1 : batches;
  const natA: OperandTexture = {
    o: p.a,
    rows: M,
    cols: K,
    rowsPad: g === "rows" ? M + tm : tilesM * tm,
    batches: aBatches,
    batchStride: p.aBatchStride,
    width: K4,
    staleRows: true,
  };
  const trA: OperandTexture = {
    o: transposed(p.a),
    rows: K,
    cols: M,
    rowsPad: K,
    batches: aBatches,
    batchStride: p.aBatchStride,
    width: tilesM * tm / 4,
    staleRows: false,
  };
  const natB: OperandTexture = {
    o: p.b,
    rows: K,
    cols: N,
    rowsPad: g === "inner" ? K : 4 * K4,
    batches: bBatches,
    batchStride: p.bBatchStride,
    width: tilesN * tn4,
    staleRows: false,
  };
  const trB: OperandTexture = {
    o: transposed(p.b),
    rows: N,
    cols: K,
    rowsPad: tilesN * 4 * tn4,
    batches: bBatches,
    batchStride: p.bBatchStride,
    width: K4,
    staleRows: true,
  };
  let aT: boolean, bT: boolean;
  if (g === "inner") [aT, bT] = [true, false];
  else {
    bT = !copies(natB) && copies(trB);
    aT = g !== "rows" && !bT && !copies(natA) && copies(trA);
  }
  const a = aT ? trA : natA;
  // With Aᵀ the loop walks k one at a time: B's rows past K are never read.
  const b = bT ? trB : aT ? { ...natB, rowsPad: K } : natB;
  const packs = (copies(a) ? 0 : 1) + (copies(b) ? 0 : 1);
  const work = (g === "inner" ? 1 : batches) * M * N * K;
  const on = enabled ??
    (defaultTiles && deviceInfo().isFallbackAdapter &&
      work >= (packs === 0 ? TEXTURE_MATMUL.minWorkCopied : TEXTURE_MATMUL.minWork));
  if (!on) return null;
  const most = gpuDevice("matmul").limits.maxTextureDimension2D;
  const fits = (x: OperandTexture) => x.width <= most && x.batches * x.rowsPad <= most;
  return fits(a) && fits(b) ? { tile, aT, bT, a, b, packs } : null;
}

/**
 * Records out = a·b (+ prior) through textures, per batch, laid out by `textureLayout`:
 * `out` a new contiguous f32 [batches, M, N] (grouped "rows": [M, N]), `prior` (contiguous,
 * shaped like out) or null. With `gram` (M = N and b = aᵀ, so the result is symmetric):
 * out = α·a·b + β·d + γ·I with d contiguous [batches, M, M] or null, upper tiles only,
 * mirrored.
 */
export function texturedProduct(
  p: TexturedProblem,
  layout: TextureLayout,
  out: Tensor,
  prior: Tensor | null,
  gram?: { alpha: number; beta: number; gamma: number; d: Tensor | null },
): void {
  const { wg } = TEXTURE_MATMUL;
  const { tm, tn4 } = layout.tile;
  const { M, N, K, batches } = p;
  const g = p.group;
  const tilesM = Math.ceil(M / tm);
  const tilesN = Math.ceil(N / (4 * tn4));
  const { a, b } = layout;
  const reads = textureReads();
  const at = acquireTexture(a.width, a.batches * a.rowsPad, reads === "storage" || !copies(a));
  const bt = acquireTexture(b.width, b.batches * b.rowsPad, reads === "storage" || !copies(b));
  try {
    pack(a, at);
    pack(b, bt);
    // A gram's tiles: the upper triangle of its square tile grid (tilesM = tilesN).
    const tilesPerBatch = gram ? (tilesN * (tilesN + 1)) / 2 : tilesM * tilesN;
    const threads = g?.mode === "rows" ? (tilesM + g.experts) * tilesN : batches * tilesPerBatch;
    const d = gram ? gram.d : prior;
    const epilogue: Epilogue = gram ? (d ? "gramD" : "gram") : d ? "add" : "plain";
    const kern = productKernel({
      tile: layout.tile,
      reads,
      epilogue,
      aT: layout.aT,
      bT: layout.bT,
      group: g?.mode ?? "none",
    });
    const bufs = [
      out.storage("matmul").buf,
      ...(d ? [d.storage("matmul").buf] : []),
      ...(g ? [g.offsets.storage("matmul").buf] : []),
      at,
      bt,
    ];
    dispatch(
      kern,
      bufs,
      PRODUCT.pack({
        M,
        N,
        K,
        tilesN,
        tilesPerBatch,
        threads,
        aRows: a.rowsPad,
        bRows: b.rowsPad,
        experts: g?.experts ?? 0,
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
