/**
 * Matrix product with NumPy semantics (1-D operands, broadcast batch axes) and its backward.
 *
 * One tiled kernel template serves every case. Each workgroup computes a BM×BN output tile
 * (BM = wgY·tm, BN = wgX·tn) of one batch entry; each thread accumulates a tm×tn register tile
 * in f32. Operands are read through their row, column and per-batch-axis strides, so
 * transposed and broadcast views are never copied. Sizes, strides and offsets travel as kernel
 * parameters; the source is specialised only on dtype, the tile configuration (data:
 * GPU_MATMUL_CONFIG stages tiles in workgroup memory, CPU_MATMUL_CONFIG reads global memory
 * directly) and which axis of each operand is unit-stride (load order, vec4 fast paths).
 *
 * The same template has two grouped modes for Mixture-of-Experts (`groupedRowsProduct`,
 * `groupedInnerProduct`, used by ops/moe.ts): row tiles that each belong to one expert, found
 * from an offsets buffer, with that expert's weight; or the expert as the batch axis with k
 * running over the expert's own rows (weight gradients). So grouped products get the same
 * register tiles and the same GPU/CPU tile data as dense ones; on CPU adapters both modes,
 * like large dense products, take ops/matmul_texture.ts's texture kernel.
 *
 * Backward: dA = dC·Bᵀ and dB = Aᵀ·dC through transposed views, summed over broadcast batch
 * axes; when the gradient's target has no batch axes ([B, T, C] @ [C, D] -> dW) the batch is
 * folded into the inner dimension so the sum happens inside one product. When a's gradient needs
 * no sum or reshape and `a` already received a gradient from another use (core/autograd.ts
 * `GradPriors`), the kernel's accumulate variant writes C = D + A·B (D that prior, read through
 * its offset; f32 sum rounded once, bit-identical to `add(D, A·B)`): one dispatch instead of two.
 * The grouped-rows product takes the same epilogue (MoE gate/up dX). A matmul whose two operands
 * both need gradients records dA and dB in ONE launch (`recordPair`: both generated bodies in one
 * module, workgroups split between them, dC bound once; bit-identical to two launches): tiny-K2
 * backward 182 → 146 dispatches; the MoE experts' grouped rows dA and inner dW pair the same way
 * (`groupedRowsAndInner`, 146 → 137). It falls back to two launches when the products need different
 * workgroup sizes (a skinny dW) or different workgroup-memory tiles.
 *
 * When B is a transposed view of a contiguous matrix (a Linear layer's weight), dB is computed
 * as (dCᵀ·A) in the weight's own layout and returned as its transposed view, so the weight's
 * gradient is contiguous (AdamW reads it as vec4). The direct (CPU) kernel stores C, and reads
 * the accumulate prior D, four columns at a time when N is a multiple of 4 (`cVec`): tiny-K2
 * AdamW step 205 against 213 ms on lavapipe (median of 20 steps each, interleaved).
 */
import { contiguousStrides } from "../core/shape.ts";
import { deviceInfo } from "../core/device.ts";
import type { DType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, type Kernel, type KernelDef, kernelFor } from "../core/kernel.ts";
import { params, type ParamValues } from "../core/params.ts";
import type { GpuBuf } from "../core/pool.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { grid1d } from "./grid.ts";
import { checkTileConfig } from "./tile_config.ts";
import { sumTo } from "./reduce.ts";
import { reshape } from "./layout.ts";
import { usablePrior } from "./grad_prior.ts";
import {
  type TexturedProblem,
  texturedProduct,
  type TextureLayout,
  textureLayout,
} from "./matmul_texture.ts";
import { findTileWgsl } from "./grouped_tiles.ts";
import { add } from "./elementwise.ts";
import { scope } from "../core/scope.ts";

/**
 * A tile configuration of the matmul kernel: tuning is data, not code.
 *
 * @example Try another tile configuration
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const tiles: mg.MatmulConfig = { ...mg.matmulConfig(), tm: 4, tn: 4 };
 * const previous = mg.setMatmulConfig(tiles);
 * console.log(await mg.ones([2, 3]).matmul(mg.ones([3, 2])).toArray()); // [[3, 3], [3, 3]]
 * mg.setMatmulConfig(previous); // back to the adapter default (null) or the earlier override
 * ```
 */
export interface MatmulConfig {
  /** Threads per workgroup along N (columns). */
  wgX: number;
  /** Threads per workgroup along M (rows). */
  wgY: number;
  /** Output rows per thread (register tile height). */
  tm: number;
  /** Output columns per thread (register tile width). */
  tn: number;
  /** Depth of the K slice staged in workgroup memory per step. */
  bk: number;
  /** Stage A and B tiles in workgroup memory (false: every thread reads global memory). */
  shared: boolean;
  /**
   * Load four values at a time. With `shared`: vec4 tiles and a contiguous tm×tn block per
   * thread (tm, tn multiples of 4). Without: read each operand as vec4 along its unit-stride
   * axis (A along k or m, B along n or k) when its sizes, offset and other strides are
   * multiples of 4 (along m needs tm, along n needs tn a multiple of 4); other layouts fall
   * back to scalar loads.
   */
  vec4: boolean;
}

/**
 * Tiles for GPUs: a 64×64 output tile per workgroup (16×16 threads, 4×4 each), K staged 16
 * deep in workgroup memory as vec4.
 */
export const GPU_MATMUL_CONFIG: Readonly<MatmulConfig> = Object.freeze({
  wgX: 16,
  wgY: 16,
  tm: 4,
  tn: 4,
  bk: 16,
  shared: true,
  vec4: true,
});

/**
 * Tiles for CPU adapters (llvmpipe/lavapipe), where barriers and per-lane loads are costly:
 * no workgroup memory, 8×16 register tiles, vec4 loads. Measured on llvmpipe at 1024³ f32
 * (2 cores, shared machine): 2.8 GFLOP/s, against 0.7 for GPU_MATMUL_CONFIG and 1.1–2.1 for
 * other 64×64 direct and shared tilings (bench/matmul_bench.ts).
 */
export const CPU_MATMUL_CONFIG: Readonly<MatmulConfig> = Object.freeze({
  wgX: 8,
  wgY: 4,
  tm: 8,
  tn: 16,
  bk: 8,
  shared: false,
  vec4: true,
});

let override: MatmulConfig | null = null;

/**
 * The tile configuration in use: the override, else the default for the adapter kind.
 *
 * @example The tiles in use on this adapter
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const { wgX, wgY, tm, tn, shared } = mg.matmulConfig();
 * console.log(`${wgX}x${wgY} threads, ${tm}x${tn} per thread, shared memory: ${shared}`);
 * ```
 */
export function matmulConfig(): MatmulConfig {
  if (override) return { ...override };
  return { ...(deviceInfo().isFallbackAdapter ? CPU_MATMUL_CONFIG : GPU_MATMUL_CONFIG) };
}

/**
 * Overrides the tile configuration of later matmuls (for tuning and tests); null restores
 * the adapter default. Returns the previous override, or null when there was none (pass it
 * back to restore the earlier state). Throws, changing nothing, when the configuration breaks
 * a limit (the message names it). Same contract as `setAttentionConfig`.
 *
 * @example Time two configurations (tuning is data)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.randn([256, 256], { seed: 0 });
 * for (const shared of [false, true]) {
 *   mg.setMatmulConfig({ wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16, shared, vec4: true });
 *   a.matmul(a).dispose(); // compiles the kernel
 *   const t0 = performance.now();
 *   a.matmul(a).dispose();
 *   await mg.sync();
 *   console.log(`shared ${shared}: ${(performance.now() - t0).toFixed(1)} ms`);
 * }
 * mg.setMatmulConfig(null);
 * ```
 */
export function setMatmulConfig(next: MatmulConfig | null): MatmulConfig | null {
  if (next !== null) checkTileConfig("setMatmulConfig", next, matmulConfigProblems);
  const prev = override;
  override = next === null ? null : { ...next };
  return prev;
}

/** The limits a matmul tile configuration breaks (none: it is valid on this device). */
function matmulConfigProblems(c: MatmulConfig): string[] {
  const problems: string[] = [];
  const { maxComputeInvocationsPerWorkgroup: maxThreads, maxComputeWorkgroupStorageSize } =
    deviceInfo().limits;
  for (const k of ["wgX", "wgY", "tm", "tn", "bk"] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1) {
      problems.push(`${k} must be a positive integer, got ${c[k]}`);
    }
  }
  for (const k of ["shared", "vec4"] as const) {
    if (typeof c[k] !== "boolean") problems.push(`${k} must be a boolean, got ${c[k]}`);
  }
  if (problems.length) return problems;
  const threads = c.wgX * c.wgY;
  if (threads > maxThreads) {
    problems.push(
      `wgX·wgY = ${threads} threads exceeds the device's maxComputeInvocationsPerWorkgroup ` +
        `${maxThreads}`,
    );
  }
  if (c.shared && c.vec4 && (c.tm % 4 !== 0 || c.tn % 4 !== 0)) {
    problems.push(`shared vec4 tiles need tm and tn multiples of 4, got ${c.tm} and ${c.tn}`);
  }
  const bytes = c.shared ? 4 * (c.wgY * c.tm + c.wgX * c.tn) * c.bk + 16 : 0;
  if (bytes > maxComputeWorkgroupStorageSize) {
    problems.push(
      `the shared tiles need ${bytes} bytes of workgroup memory; the device allows ` +
        `${maxComputeWorkgroupStorageSize}`,
    );
  }
  return problems;
}

/** Most batch axes (after merging) the kernel's parameter block holds (16 + 3·15 words). */
const MAX_BATCH_RANK = 15;

/**
 * The matmul parameters: sizes, tile counts and workgroups, the merged batch rank, operand
 * offsets and row/column strides, the expert count and B's expert stride (grouped modes),
 * the offset of the accumulated operand D (`C = A·B + D`), then the batch dims and each
 * operand's batch strides.
 */
const MATMUL = params("matmul", {
  M: "u32",
  N: "u32",
  K: "u32",
  tilesN: "u32",
  tilesM: "u32",
  groups: "u32",
  rank: "u32",
  offA: "u32",
  offB: "u32",
  sAm: "u32",
  sAk: "u32",
  sBk: "u32",
  sBn: "u32",
  experts: "u32",
  bExpertStride: "u32",
  offD: "u32",
  batch: ["u32", MAX_BATCH_RANK],
  aBatchStrides: ["u32", MAX_BATCH_RANK],
  bBatchStrides: ["u32", MAX_BATCH_RANK],
});

/** One operand as the kernel sees it: a strided [batch..., rows, cols] view. */
interface Operand {
  offset: number;
  rowStride: number;
  colStride: number;
  /** Strides of the output's batch axes (0 where this operand broadcasts). */
  batchStrides: number[];
}

/**
 * How a grouped product (Mixture-of-Experts) splits its work by expert, from the i32 [E + 1]
 * `offsets` (non-decreasing, from 0):
 * - "rows": rows offsets[e]..offsets[e+1]−1 of A and C belong to expert e, whose B is read at
 *   `bExpertStride`·e. Row tiles never straddle two experts (the grid holds an upper bound on
 *   the tiles of all groups, ceil(M / BM) + E; each workgroup finds its expert and its first
 *   row from the offsets, and workgroups past the last tile exit).
 * - "inner": the batch axis is the expert; expert e sums k over offsets[e]..offsets[e+1]−1
 *   only (a weight gradient Σ_r P[r]ᵀ Q[r] per group; an empty group gives zeros).
 */
interface Grouping {
  mode: "rows" | "inner";
  offsets: Tensor;
  experts: number;
  bExpertStride: number;
}

/** A fully resolved product: C[batch, M, N] = A[batch, M, K] · B[batch, K, N]. */
interface Problem {
  M: number;
  N: number;
  K: number;
  batch: number[];
  a: Operand;
  b: Operand;
  group?: Grouping;
}

type GroupMode = "none" | Grouping["mode"];

function wgslStore(dtype: DType): string {
  return dtype === "f16" ? "f16" : "f32";
}

/** Layout facts about the operands that change the generated code. */
interface Variant {
  /** A's columns (k) are unit-stride: load the shared A tile k-fastest. */
  aKUnit: boolean;
  /** B's columns (n) are unit-stride: load the shared B tile n-fastest. */
  bNUnit: boolean;
  /** Direct kernel: read A as vec4 along k (unit k stride, everything aligned to 4). */
  aVec: boolean;
  /** Direct kernel: read B as vec4 along n (unit n stride, everything aligned to 4). */
  bVec: boolean;
  /** Direct kernel, A not aVec: read A as vec4 along m (a transposed view, aligned to 4). */
  aMVec: boolean;
  /** Direct kernel, B not bVec: read B as vec4 along k (a transposed view, aligned to 4). */
  bKVec: boolean;
  /**
   * Direct f32 kernel: each thread's columns are consecutive and C (and D) are stored (read)
   * as vec4 along n (N, tn and D's offset multiples of 4): a quarter of the store
   * instructions, which llvmpipe runs lane by lane.
   */
  cVec: boolean;
}

const XYZW = "xyzw";

/**
 * Generates the tiled kernel for a dtype, a tile config, the operand layout variant and the
 * grouping mode (see `Grouping`). With `accumulate`, the epilogue adds a contiguous D shaped
 * like C: C = D + A·B, summed in f32 and rounded once, exactly as `add(D, A·B)` would.
 */
function matmulKernel(
  dtype: DType,
  c: MatmulConfig,
  v: Variant,
  gm: GroupMode = "none",
  accumulate = false,
): Kernel {
  return kernelFor(sourceKey(dtype, c, v, gm, accumulate), () => {
    const src = matmulSource(dtype, c, v, gm, accumulate);
    return {
      name: gm === "none" ? "matmul" : `matmul_grouped_${gm}`,
      bindings: src.bindings,
      workgroupSize: [c.wgX * c.wgY],
      params: MATMUL,
      prelude: src.prelude,
      body: src.body,
      pairable: true,
    };
  });
}

/** Everything `matmulSource` depends on, as a short string. */
function sourceKey(
  dtype: DType,
  c: MatmulConfig,
  v: Variant,
  gm: GroupMode,
  accumulate: boolean,
): string {
  const b = (x: boolean) => (x ? 1 : 0);
  const tiles = `${c.wgX},${c.wgY},${c.tm},${c.tn},${c.bk},${b(c.shared)},${b(c.vec4)}`;
  const layout = [v.aKUnit, v.bNUnit, v.aVec, v.bVec, v.aMVec, v.bKVec, v.cVec].map(b).join("");
  return `${dtype}|${tiles}|${layout}|${gm}|${b(accumulate)}`;
}

const sources = new Map<string, MatmulSource>();

/** `matmulSource`, generated once per distinct key (it is a pure function of its arguments). */
function cachedSource(
  dtype: DType,
  c: MatmulConfig,
  v: Variant,
  gm: GroupMode,
  accumulate: boolean,
): { key: string; src: MatmulSource } {
  const key = sourceKey(dtype, c, v, gm, accumulate);
  let src = sources.get(key);
  if (!src) sources.set(key, src = matmulSource(dtype, c, v, gm, accumulate));
  return { key, src };
}

/** The WGSL of one tiled product: body (reads MATMUL's accessors), prelude and bindings. */
interface MatmulSource {
  body: string;
  prelude: string;
  /** The workgroup-memory tiles (shared configs), part of `prelude`. */
  tiles: string;
  /** The grouped modes' helpers (`find_tile`, `mm_grp`), part of `prelude`. */
  groupPrelude: string;
  bindings: Binding[];
}

/** Generates `matmulKernel`'s source (see there). */
function matmulSource(
  dtype: DType,
  c: MatmulConfig,
  v: Variant,
  gm: GroupMode,
  accumulate: boolean,
): MatmulSource {
  const T = wgslStore(dtype);
  const BM = c.wgY * c.tm;
  const BN = c.wgX * c.tn;
  const NT = c.wgX * c.wgY;
  const rows = [...Array(c.tm).keys()];
  const cols = [...Array(c.tn).keys()];
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);
  let groupPrelude = "";
  // Parameters: MATMUL (sizes, tiles, offsets, strides, batch dims and strides).
  // Row bound, and the k range, of this workgroup (grouped modes read them from `off`).
  const Mb = gm === "rows" ? "gi.z" : "M";
  const [kLo, kHi] = gm === "inner" ? ["kr.x", "kr.y"] : ["0u", "K"];
  emit(`let wg = wid.y * nwg.x + wid.x;
  if (wg >= p_groups()) { return; }
  let M = p_M(); let N = p_N(); let K = p_K();
  let tn0 = wg % p_tilesN();
  let rest = wg / p_tilesN();
  let tm0 = rest % p_tilesM();
  let bi = rest / p_tilesM();
  var offA = p_offA();
  var offB = p_offB();
  var rem = bi;
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_batch(u32(d));
    let co = rem % dim;
    rem /= dim;
    offA += co * p_aBatchStrides(u32(d));
    offB += co * p_bBatchStrides(u32(d));
  }
  let sAm = p_sAm(); let sAk = p_sAk(); let sBk = p_sBk(); let sBn = p_sBn();
  var m0 = tm0 * ${BM}u;
  let n0 = tn0 * ${BN}u;
  let tx = ${c.wgX === 1 ? "0u" : `lidx % ${c.wgX}u`};
  let ty = ${c.wgY === 1 ? "0u" : `lidx / ${c.wgX}u`};`);
  if (gm !== "none") {
    // With workgroup memory the bounds must be provably uniform (barriers follow).
    const [fn, varDecl] = gm === "rows"
      ? ["find_tile(rest)", "var<workgroup> mm_grp: vec4<u32>;"]
      : ["vec2<u32>(off[bi], off[bi + 1u])", "var<workgroup> mm_grp: vec2<u32>;"];
    const name = gm === "rows" ? "gi" : "kr";
    if (c.shared) {
      emit(`  if (lidx == 0u) { mm_grp = ${fn}; }
  let ${name} = workgroupUniformLoad(&mm_grp);`);
    } else emit(`  let ${name} = ${fn};`);
    groupPrelude = varDecl;
    if (gm === "rows") {
      emit(`  if (gi.w == 0u) { return; }
  m0 = gi.y;
  offB += gi.x * p_bExpertStride();`);
      groupPrelude += findTileWgsl(BM);
    }
  }
  // Accumulators: vec4 groups of four columns when columns are blocked per thread.
  const accVec = c.shared ? c.vec4 : v.bVec;
  const rowBlocked = c.shared ? c.vec4 : v.aMVec;
  const colBlocked = accVec || v.cVec;
  const rowOf = (i: number) => rowBlocked ? `ty * ${c.tm}u + ${i}u` : `ty + ${i * c.wgY}u`;
  const colOf = (j: number) => colBlocked ? `tx * ${c.tn}u + ${j}u` : `tx + ${j * c.wgX}u`;
  const acc = (i: number, j: number) => accVec ? `c${i}_${j >> 2}.${XYZW[j & 3]}` : `c${i}_${j}`;
  const groups = [...Array(accVec ? c.tn / 4 : 0).keys()];
  for (const i of rows) {
    if (accVec) { for (const g of groups) emit(`  var c${i}_${g} = vec4<f32>(0.0);`); }
    else for (const j of cols) emit(`  var c${i}_${j} = 0.0;`);
  }
  if (c.shared) {
    const loadsA = Math.ceil((BM * c.bk) / NT);
    const loadsB = Math.ceil((BN * c.bk) / NT);
    // Tiles are stored k-major: As[kk * BM + r], Bs[kk * BN + col] (as vec4 when `vec4`).
    const store = (arr: string, idx: string, val: string) =>
      c.vec4 ? `${arr}[(${idx}) / 4u][(${idx}) % 4u] = ${val};` : `${arr}[${idx}] = ${val};`;
    emit(`  for (var k0 = ${kLo}; k0 < ${kHi}; k0 += ${c.bk}u) {`);
    for (let l = 0; l < loadsA; l++) {
      const e = `lidx + ${l * NT}u`;
      const [r, kk] = v.aKUnit
        ? [`(${e}) / ${c.bk}u`, `(${e}) % ${c.bk}u`]
        : [`(${e}) % ${BM}u`, `(${e}) / ${BM}u`];
      const guard = (l + 1) * NT > BM * c.bk ? `if (${e} < ${BM * c.bk}u) ` : "";
      emit(`    ${guard}{
      let r = ${r}; let kk = ${kk};
      let gm = min(m0 + r, ${Mb} - 1u); let gk = k0 + kk;
      let v = f32(A[offA + gm * sAm + min(gk, ${kHi} - 1u) * sAk]);
      ${store("As", `kk * ${BM}u + r`, `select(0.0, v, gk < ${kHi})`)}
    }`);
    }
    for (let l = 0; l < loadsB; l++) {
      const e = `lidx + ${l * NT}u`;
      const [kk, col] = v.bNUnit
        ? [`(${e}) / ${BN}u`, `(${e}) % ${BN}u`]
        : [`(${e}) % ${c.bk}u`, `(${e}) / ${c.bk}u`];
      const guard = (l + 1) * NT > BN * c.bk ? `if (${e} < ${BN * c.bk}u) ` : "";
      emit(`    ${guard}{
      let kk = ${kk}; let col = ${col};
      let gn = min(n0 + col, N - 1u); let gk = k0 + kk;
      let v = f32(B[offB + min(gk, ${kHi} - 1u) * sBk + gn * sBn]);
      ${store("Bs", `kk * ${BN}u + col`, `select(0.0, v, gk < ${kHi})`)}
    }`);
    }
    emit(`    workgroupBarrier();
    for (var kk = 0u; kk < ${c.bk}u; kk++) {`);
    if (c.vec4) {
      for (let i = 0; i < c.tm; i += 4) {
        emit(`      let a${i >> 2} = As[kk * ${BM / 4}u + ty * ${c.tm / 4}u + ${i >> 2}u];`);
      }
      for (const g of groups) {
        emit(`      let b${g} = Bs[kk * ${BN / 4}u + tx * ${c.tn / 4}u + ${g}u];`);
      }
      for (const i of rows) {
        const a = `vec4<f32>(a${i >> 2}.${XYZW[i & 3]})`;
        for (const g of groups) emit(`      c${i}_${g} = fma(${a}, b${g}, c${i}_${g});`);
      }
    } else {
      for (const i of rows) emit(`      let a${i} = As[kk * ${BM}u + ${rowOf(i)}];`);
      for (const j of cols) emit(`      let b${j} = Bs[kk * ${BN}u + ${colOf(j)}];`);
      for (const i of rows) {
        for (const j of cols) emit(`      c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
      }
    }
    emit(`    }
    workgroupBarrier();
  }`);
  } else {
    // Direct variant: clamped row/column pointers, no workgroup memory, no barriers. Vector
    // loads read four k (aVec, bKVec), four rows (aMVec) or four columns (bVec) at once; their
    // pointers count vec4s (the launcher checked alignment, so a clamped group of four is
    // either fully in range or fully out of it).
    const kStep = v.aVec || v.bKVec ? 4 : 1;
    const rowGroups = [...Array(v.aMVec ? c.tm / 4 : 0).keys()];
    if (v.aMVec) {
      emit("  let sAk4 = sAk / 4u;");
      for (const g of rowGroups) {
        emit(`  let pa${g} = (offA + min(m0 + ty * ${c.tm}u + ${4 * g}u, ${Mb} - 4u)) / 4u;`);
      }
    } else {
      const q = v.aVec ? " / 4u" : "";
      for (const i of rows) {
        emit(`  let pa${i} = (offA + min(m0 + ${rowOf(i)}, ${Mb} - 1u) * sAm)${q};`);
      }
    }
    if (v.bVec) {
      emit("  let sBk4 = sBk / 4u;");
      for (const g of groups) {
        emit(`  let pb${g} = (offB + min(n0 + tx * ${c.tn}u + ${4 * g}u, N - 4u)) / 4u;`);
      }
    } else {
      const q = v.bKVec ? " / 4u" : "";
      for (const j of cols) {
        emit(`  let pb${j} = (offB + min(n0 + ${colOf(j)}, N - 1u) * sBn)${q};`);
      }
    }
    emit(`  for (var k = ${kLo}; k < ${kHi}; k += ${kStep}u) {`);
    if (v.aVec) { for (const i of rows) emit(`    let av${i} = vec4<f32>(A[pa${i} + k / 4u]);`); }
    if (v.bKVec) { for (const j of cols) emit(`    let bv${j} = vec4<f32>(B[pb${j} + k / 4u]);`); }
    for (let kk = 0; kk < kStep; kk++) {
      const kx = `(k + ${kk}u)`;
      let aOf = (i: number) => `a${kk}_${i}`;
      if (v.aVec) aOf = (i) => `av${i}.${XYZW[kk]}`;
      else if (v.aMVec) {
        for (const g of rowGroups) {
          emit(`    let am${kk}_${g} = vec4<f32>(A[pa${g} + ${kx} * sAk4]);`);
        }
        aOf = (i) => `am${kk}_${i >> 2}.${XYZW[i & 3]}`;
      } else for (const i of rows) emit(`    let a${kk}_${i} = f32(A[pa${i} + ${kx} * sAk]);`);
      if (v.bVec) {
        for (const g of groups) emit(`    let b${kk}_${g} = vec4<f32>(B[pb${g} + ${kx} * sBk4]);`);
        for (const i of rows) {
          for (const g of groups) {
            emit(`    c${i}_${g} = fma(vec4<f32>(${aOf(i)}), b${kk}_${g}, c${i}_${g});`);
          }
        }
      } else {
        let bOf = (j: number) => `b${kk}_${j}`;
        if (v.bKVec) bOf = (j) => `bv${j}.${XYZW[kk]}`;
        else for (const j of cols) emit(`    let b${kk}_${j} = f32(B[pb${j} + ${kx} * sBk]);`);
        for (const i of rows) {
          for (const j of cols) emit(`    c${i}_${j} = fma(${aOf(i)}, ${bOf(j)}, c${i}_${j});`);
        }
      }
    }
    emit(`  }`);
  }
  emit(`  let cbase = bi * M * N;`);
  if (accumulate) emit(`  let dbase = p_offD() + cbase;`);
  const result = (i: number, j: number) =>
    accumulate
      ? T === "f32"
        ? `D[dbase + gm * N + gn] + ${acc(i, j)}`
        : `${T}(f32(D[dbase + gm * N + gn]) + f32(${T}(${acc(i, j)})))`
      : `${T}(${acc(i, j)})`;
  for (const i of rows) {
    emit(`  { let gm = m0 + ${rowOf(i)};
    if (gm < ${Mb}) {`);
    if (v.cVec) {
      // Four consecutive columns per store; N % 4 = 0, so a group is all in or all out.
      for (let j = 0; j < c.tn; j += 4) {
        const own = accVec
          ? `c${i}_${j >> 2}`
          : `vec4<f32>(${[0, 1, 2, 3].map((q) => acc(i, j + q)).join(", ")})`;
        const value = accumulate ? `D[(dbase + gm * N + gn) / 4u] + ${own}` : own;
        emit(`      { let gn = n0 + ${colOf(j)};
        if (gn < N) { C[(cbase + gm * N + gn) / 4u] = ${value}; } }`);
      }
    } else {
      for (const j of cols) {
        emit(`      { let gn = n0 + ${colOf(j)};
        if (gn < N) { C[cbase + gm * N + gn] = ${result(i, j)}; } }`);
      }
    }
    emit(`    } }`);
  }
  const el = c.vec4 ? "vec4<f32>" : "f32";
  const tiles = c.shared
    ? `var<workgroup> As: array<${el}, ${(BM * c.bk) / (c.vec4 ? 4 : 1)}>;
var<workgroup> Bs: array<${el}, ${(BN * c.bk) / (c.vec4 ? 4 : 1)}>;
`
    : "";
  const bindings = [
    { name: "A", type: v.aVec || v.aMVec ? `vec4<${T}>` : T, access: "read" as const },
    { name: "B", type: v.bVec || v.bKVec ? `vec4<${T}>` : T, access: "read" as const },
    { name: "C", type: v.cVec ? `vec4<${T}>` : T, access: "read_write" as const },
  ];
  if (gm !== "none") bindings.push({ name: "off", type: "u32", access: "read" });
  if (accumulate) bindings.push({ name: "D", type: v.cVec ? `vec4<${T}>` : T, access: "read" });
  return { body: lines.join("\n"), prelude: tiles + groupPrelude, tiles, groupPrelude, bindings };
}

/** Merges batch axes that every operand can walk with one stride; drops size-1 axes. */
function mergeBatch(
  batch: number[],
  aStrides: number[],
  bStrides: number[],
): [number[], number[], number[]] {
  const dims: number[] = [];
  const sa: number[] = [];
  const sb: number[] = [];
  for (let i = 0; i < batch.length; i++) {
    if (batch[i] === 1) continue;
    const last = dims.length - 1;
    if (
      last >= 0 && sa[last] === aStrides[i] * batch[i] && sb[last] === bStrides[i] * batch[i]
    ) {
      dims[last] *= batch[i];
      sa[last] = aStrides[i];
      sb[last] = bStrides[i];
    } else {
      dims.push(batch[i]);
      sa.push(aStrides[i]);
      sb.push(bStrides[i]);
    }
  }
  return [dims, sa, sb];
}

/**
 * When B is shared by every batch entry and A's batch axes and rows form one strided axis,
 * the whole product is one [batch·M, K] · [K, N] matrix product (better tile occupancy).
 */
function foldBatchIntoRows(p: Problem): Problem {
  if (p.batch.length === 0 || p.b.batchStrides.some((s) => s !== 0)) return p;
  const rows = mergeAxes([...p.batch, p.M], [...p.a.batchStrides, p.a.rowStride]);
  if (!rows) return p;
  return {
    ...p,
    M: rows.size,
    batch: [],
    a: { ...p.a, rowStride: rows.stride, batchStrides: [] },
    b: { ...p.b, batchStrides: [] },
  };
}

/** Picks the load order and the vec4 fast paths a problem's layout allows. */
function variant(p: Problem, c: MatmulConfig, f32Out: boolean, priorOffset: number): Variant {
  const aligned = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const direct = !c.shared && c.vec4;
  const { a, b } = p;
  // Grouped rows start anywhere (no vec4 along m); grouped k ranges too (no vec4 along k).
  const mVecOk = p.group?.mode !== "rows";
  const kVecOk = p.group?.mode !== "inner";
  const bExtra = p.group ? [p.group.bExpertStride] : [];
  const aVec = direct && kVecOk && a.colStride === 1 &&
    aligned(p.K, a.offset, a.rowStride, ...a.batchStrides);
  const bVec = direct && c.tn % 4 === 0 && b.colStride === 1 &&
    aligned(p.N, b.offset, b.rowStride, ...b.batchStrides, ...bExtra);
  return {
    aKUnit: a.colStride === 1 || p.M === 1,
    bNUnit: b.colStride === 1 || p.K === 1,
    aVec,
    bVec,
    aMVec: direct && mVecOk && !aVec && c.tm % 4 === 0 && a.rowStride === 1 &&
      aligned(p.M, a.offset, a.colStride, ...a.batchStrides),
    bKVec: direct && kVecOk && !bVec && b.rowStride === 1 &&
      aligned(p.K, b.offset, b.colStride, ...b.batchStrides, ...bExtra),
    cVec: direct && f32Out && c.tn % 4 === 0 && aligned(p.N, priorOffset),
  };
}

/**
 * The tile config for a problem: the configured tiles, or for skinny products (M or N at most
 * 4: vector-matrix, matrix-vector, decode steps) a one-dimensional workgroup along the long
 * side, so that a 32- or 64-row tile does not recompute one row 32 or 64 times.
 */
function configFor(p: Problem): MatmulConfig {
  const c = matmulConfig();
  if (p.group) return c;
  if (!c.shared) {
    // Direct tiles wider than the product (router logits, narrow heads) waste whole register
    // tiles: narrow the column tile (tn down to 4, then fewer, taller thread columns).
    while (c.wgX * c.tn >= 2 * p.N && p.N > 4) {
      if (c.tn > 4 && c.tn % 8 === 0) c.tn /= 2;
      else if (c.wgX > 1 && c.wgX % 2 === 0) {
        c.wgX /= 2;
        c.wgY *= 2;
      } else break;
    }
  }
  if (p.M <= 4 && p.M < c.wgY * c.tm && p.N > 4) {
    return { wgX: 64, wgY: 1, tm: p.M === 1 ? 1 : 4, tn: 4, bk: 8, shared: false, vec4: true };
  }
  if (p.N <= 4 && p.N < c.wgX * c.tn && p.M > 4) {
    return { wgX: 1, wgY: 64, tm: 4, tn: p.N === 1 ? 1 : 4, bk: 8, shared: false, vec4: true };
  }
  return c;
}

/** A resolved product ready to record: its output, tiles, source variant and parameters. */
interface Planned {
  p: Problem;
  ta: Tensor;
  tb: Tensor;
  out: Tensor;
  prior: Tensor | null;
  c: MatmulConfig;
  v: Variant;
  groups: number;
  values: ParamValues<typeof MATMUL.decls>;
}

/**
 * Allocates the output of a resolved problem (a new contiguous [batch..., M, N] tensor) and
 * works out its launch; null when there is nothing to compute (an empty product: `out` is
 * returned as is by the callers).
 */
function plan(
  p: Problem,
  ta: Tensor,
  tb: Tensor,
  outShape: number[],
  prior: Tensor | null,
): Planned | Tensor {
  const out = Tensor.empty(outShape, ta.dtype);
  const g = p.group;
  const nBatch = g?.mode === "inner" ? g.experts : p.batch.reduce((x, y) => x * y, 1);
  if (p.M === 0 || p.N === 0 || nBatch === 0) return out;
  const c = configFor(p);
  const BM = c.wgY * c.tm;
  const BN = c.wgX * c.tn;
  // Grouped rows: an upper bound on Σ_e ceil(rows_e / BM).
  const tilesM = Math.ceil(p.M / BM) + (g?.mode === "rows" ? g.experts : 0);
  const tilesN = Math.ceil(p.N / BN);
  const groups = tilesM * tilesN * nBatch;
  const values = {
    M: p.M,
    N: p.N,
    K: p.K,
    tilesN,
    tilesM,
    groups,
    rank: p.batch.length,
    offA: p.a.offset,
    offB: p.b.offset,
    sAm: p.a.rowStride,
    sAk: p.a.colStride,
    sBk: p.b.rowStride,
    sBn: p.b.colStride,
    experts: g?.experts ?? 0,
    bExpertStride: g?.bExpertStride ?? 0,
    offD: prior?.offset ?? 0,
    batch: p.batch,
    aBatchStrides: p.a.batchStrides,
    bBatchStrides: p.b.batchStrides,
  };
  const v = variant(p, c, out.dtype === "f32", prior?.offset ?? 0);
  return { p, ta, tb, out, prior, c, v, groups, values };
}

/** The tensors a planned product binds, in its kernel's binding order. */
function operandsOf(q: Planned): Tensor[] {
  const g = q.p.group;
  return [q.ta, q.tb, q.out, ...(g ? [g.offsets] : []), ...(q.prior ? [q.prior] : [])];
}

/**
 * Records the kernel for a resolved problem into a new contiguous [batch..., M, N] tensor;
 * with `prior` (contiguous, shaped and typed like the result), the result is prior + A·B.
 */
function launch(
  p: Problem,
  ta: Tensor,
  tb: Tensor,
  outShape: number[],
  prior: Tensor | null = null,
): Tensor {
  const q = plan(p, ta, tb, outShape, prior);
  if (q instanceof Tensor) return q;
  record1(q);
  return q.out;
}

/**
 * The CPU adapters' texture path for a planned product (ops/matmul_texture.ts): its problem
 * and texture layout, or null when it keeps the storage kernel.
 */
function texturePlan(q: Planned): { tp: TexturedProblem; layout: TextureLayout } | null {
  const { p } = q;
  if (p.batch.length > 1 || q.ta.dtype !== "f32" || p.K === 0) return null;
  const g = p.group;
  const tp: TexturedProblem = {
    M: p.M,
    N: p.N,
    K: p.K,
    batches: g?.mode === "inner" ? g.experts : p.batch[0] ?? 1,
    a: { t: q.ta, offset: p.a.offset, rowStride: p.a.rowStride, colStride: p.a.colStride },
    aBatchStride: p.a.batchStrides[0] ?? 0,
    b: { t: q.tb, offset: p.b.offset, rowStride: p.b.rowStride, colStride: p.b.colStride },
    bBatchStride: g?.mode === "rows" ? g.bExpertStride : p.b.batchStrides[0] ?? 0,
    group: g && { mode: g.mode, offsets: g.offsets, experts: g.experts },
  };
  const layout = textureLayout(tp, override === null);
  return layout && { tp, layout };
}

/** Records one planned product; `tex` is its texture plan when the caller already has it. */
function record1(q: Planned, tex = texturePlan(q)): void {
  if (tex) {
    texturedProduct(tex.tp, tex.layout, q.out, q.prior);
    return;
  }
  const k = matmulKernel(q.ta.dtype, q.c, q.v, q.p.group?.mode ?? "none", q.prior !== null);
  const bufs = operandsOf(q).map((t) => t.storage("matmul").buf);
  dispatch(k, bufs, MATMUL.pack(q.values), grid1d(q.groups, 1));
}

/** Most merged batch axes of each product of a paired launch (2 × 22 words + 1 fit the block). */
const PAIR_RANK = 2;
const PAIR_SCALARS = [
  "M",
  "N",
  "K",
  "tilesN",
  "tilesM",
  "groups",
  "rank",
  "offA",
  "offB",
  "sAm",
  "sAk",
  "sBk",
  "sBn",
  "experts",
  "bExpertStride",
  "offD",
] as const;
const PAIR_ARRAYS = ["batch", "aBatchStrides", "bBatchStrides"] as const;

/** Both products' MATMUL words, suffixed 0 and 1 (batch arrays of PAIR_RANK). */
const MATMUL_PAIR = params("matmul_pair", {
  ...Object.fromEntries(
    [0, 1].flatMap((j) => [
      ...PAIR_SCALARS.map((k) => [`${k}${j}`, "u32"]),
      ...PAIR_ARRAYS.map((k) => [`${k}${j}`, ["u32", PAIR_RANK]]),
    ]),
  ) as Record<string, "u32" | readonly ["u32", number]>,
});

let pairing = true;

/**
 * Turns the paired launch of a matmul's two gradients off (false) or on (true, the default);
 * returns the previous setting. Tests compare both; not part of the public API.
 */
export function setMatmulPairing(on: boolean): boolean {
  const previous = pairing;
  pairing = on;
  return previous;
}

/**
 * Records two independent products in ONE dispatch (a matmul's two gradients, dA = dC·Bᵀ and
 * dB = Aᵀ·dC): the module holds both products' generated bodies as functions, each reading
 * its own parameter words and bindings; workgroups 0..groups₀−1 run the first, the rest the
 * second. Each output element is computed by exactly the code of its single launch, so the
 * results are bit-identical. An operand both products read (dC) is bound once. Falls back to
 * two launches when the products need different tile configurations, grouping, more than
 * PAIR_RANK batch axes, or share a buffer in two different binding types.
 */
function recordPair(x: Planned, y: Planned): void {
  const tx = texturePlan(x), ty = texturePlan(y);
  if (tx || ty) {
    record1(x, tx);
    record1(y, ty);
    return;
  }
  const sameConfig = JSON.stringify(x.c) === JSON.stringify(y.c);
  // One workgroup size; workgroup-memory tiles only when both use the same ones.
  const fits = x.c.wgX * x.c.wgY === y.c.wgX * y.c.wgY &&
    (sameConfig || (!x.c.shared && !y.c.shared));
  const simple = [x, y].every((q) => q.p.batch.length <= PAIR_RANK);
  const cached = [x, y].map((q) =>
    cachedSource(q.ta.dtype, q.c, q.v, q.p.group?.mode ?? "none", q.prior !== null)
  );
  const srcs = cached.map((s) => s.src);
  // One binding per distinct buffer; a buffer in two roles must have one type, and be read.
  const bindings: Binding[] = [];
  const bufs: GpuBuf[] = [];
  const names: Record<string, string>[] = [{}, {}];
  let ok = pairing && fits && simple;
  [x, y].forEach((q, j) => {
    operandsOf(q).forEach((t, r) => {
      const b = srcs[j].bindings[r];
      const buf = t.storage("matmul").buf;
      const at = bufs.indexOf(buf);
      if (at >= 0) {
        const prev = bindings[at];
        if (prev.type !== b.type || prev.access !== "read" || b.access !== "read") ok = false;
        names[j][b.name] = prev.name;
        return;
      }
      const name = `${b.name}${j}`;
      bindings.push({ ...b, name });
      bufs.push(buf);
      names[j][b.name] = name;
    });
  });
  // The WebGPU default allows 8 storage buffers per stage; a device may allow fewer or more.
  const most = deviceInfo().limits.maxStorageBuffersPerShaderStage;
  if (!ok || bindings.length > most) {
    record1(x);
    record1(y);
    return;
  }
  // Job j's own names: parameter accessors, bindings and the grouped modes' helpers.
  const own = (text: string, j: number) =>
    text
      .replace(/\bp_([A-Za-z]+)\(/g, `p_$1${j}(`)
      .replace(/\b(A|B|C|D|off)\[/g, (_, n: string) => `${names[j][n]}[`)
      .replace(/\b(find_tile|mm_grp)\b/g, `$1${j}`);
  const makePair = (): KernelDef => {
    const fns = srcs.map((src, j) => {
      const body = own(src.body.replace("let wg = wid.y * nwg.x + wid.x;", "let wg = wgi;"), j);
      return `${own(src.groupPrelude, j)}\nfn job${j}(wgi: u32, lidx: u32) {\n${body}\n}`;
    });
    return {
      name: "matmul_pair",
      bindings,
      workgroupSize: [x.c.wgX * x.c.wgY],
      params: MATMUL_PAIR,
      prelude: `${(x.c.shared ? srcs[0] : srcs[1]).tiles}\n${fns.join("\n")}`,
      pairable: true,
      body: `
  let wg = wid.y * nwg.x + wid.x;
  let g0 = p_groups0();
  if (wg < g0) { job0(wg, lidx); } else { job1(wg - g0, lidx); }`,
    };
  };
  // The pair's source is fixed by both sources and by which bindings they share.
  const pairKey = `${cached[0].key}#${cached[1].key}#${
    bindings.map((b) => `${b.name}:${b.type}:${b.access}`).join(",")
  }#${names.map((m) => Object.entries(m).join(",")).join(";")}`;
  const k = kernelFor(pairKey, makePair);
  const values: Record<string, number | ArrayLike<number>> = {};
  [x, y].forEach((q, j) => {
    for (const k of PAIR_SCALARS) values[`${k}${j}`] = q.values[k] as number;
    for (const k of PAIR_ARRAYS) values[`${k}${j}`] = q.values[k] as ArrayLike<number>;
  });
  dispatch(k, bufs, MATMUL_PAIR.pack(values as never), grid1d(x.groups + y.groups, 1));
}

function validate(a: Tensor, b: Tensor): void {
  for (const [name, t] of [["a", a], ["b", b]] as const) {
    if (!(t instanceof Tensor)) {
      throw new MoongradError("matmul", `argument ${name} must be a Tensor, got ${String(t)}`);
    }
    t.storage("matmul");
  }
  const shapes = `a ${a.dtype} ${fmtShape(a.shape)}, b ${b.dtype} ${fmtShape(b.shape)}`;
  for (const [name, t] of [["a", a], ["b", b]] as const) {
    if (t.rank === 0) {
      throw new MoongradError("matmul", `argument ${name} is a scalar (rank 0); ${shapes}`);
    }
    if (t.dtype !== "f32" && t.dtype !== "f16") {
      throw new MoongradError(
        "matmul",
        `argument ${name} has dtype ${t.dtype}; matmul takes f32 or f16 (${shapes})`,
      );
    }
  }
  if (a.dtype !== b.dtype) {
    throw new MoongradError("matmul", `dtypes differ (${shapes}); cast one operand first`);
  }
  if (a.dtype === "f16" && !deviceInfo().f16) {
    throw new MoongradError("matmul", `f16 needs the adapter feature shader-f16 (${shapes})`);
  }
  const K = a.shape[a.rank - 1];
  const Kb = b.shape[b.rank === 1 ? 0 : b.rank - 2];
  if (K !== Kb) {
    throw new MoongradError(
      "matmul",
      `inner dimensions differ: a has ${K} columns, b has ${Kb} rows (${shapes})`,
    );
  }
}

/** The [batch..., rows, cols] view of an operand of rank >= 2 (1-D operands promoted). */
interface Mat {
  shape: number[];
  strides: number[];
  offset: number;
}

function asMatrix(t: Tensor, side: "a" | "b"): Mat {
  if (t.rank >= 2) return { shape: [...t.shape], strides: [...t.strides], offset: t.offset };
  return side === "a"
    ? { shape: [1, t.shape[0]], strides: [0, t.strides[0]], offset: t.offset }
    : { shape: [t.shape[0], 1], strides: [t.strides[0], 0], offset: t.offset };
}

function batchShape(
  a: Mat,
  b: Mat,
  shapes: () => string,
): number[] {
  const ba = a.shape.slice(0, -2);
  const bb = b.shape.slice(0, -2);
  const r = Math.max(ba.length, bb.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = ba[ba.length - r + i] ?? 1;
    const y = bb[bb.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new MoongradError(
        "matmul",
        `batch axes do not broadcast: ${fmtShape(ba)} vs ${fmtShape(bb)} (${shapes()})`,
      );
    }
    out.push(x === 1 ? y : x);
  }
  return out;
}

function operand(m: Mat, batch: number[]): Operand {
  const r = m.shape.length;
  const lead = batch.length - (r - 2);
  return {
    offset: m.offset,
    rowStride: m.shape[r - 2] === 1 ? 0 : m.strides[r - 2],
    colStride: m.shape[r - 1] === 1 ? 0 : m.strides[r - 1],
    batchStrides: batch.map((_, i) => {
      if (i < lead) return 0;
      return m.shape[i - lead] === 1 ? 0 : m.strides[i - lead];
    }),
  };
}

/**
 * Product of two [batch..., rows, cols] views; returns the contiguous [batch..., M, N] result
 * (plus `prior`, contiguous and shaped like the result, when given).
 */
function product(ta: Tensor, a: Mat, tb: Tensor, b: Mat, prior: Tensor | null = null): Tensor {
  const r = resolve(ta, a, tb, b);
  return launch(r.p, ta, tb, r.outShape, prior);
}

/** The problem of a product of two [batch..., rows, cols] views, and its output shape. */
function resolve(ta: Tensor, a: Mat, tb: Tensor, b: Mat): { p: Problem; outShape: number[] } {
  const shapes = () => `a ${ta.dtype} ${fmtShape(ta.shape)}, b ${tb.dtype} ${fmtShape(tb.shape)}`;
  const batch = batchShape(a, b, shapes);
  const M = a.shape[a.shape.length - 2];
  const K = a.shape[a.shape.length - 1];
  const N = b.shape[b.shape.length - 1];
  const oa = operand(a, batch);
  const ob = operand(b, batch);
  const [dims, sa, sb] = mergeBatch(batch, oa.batchStrides, ob.batchStrides);
  if (dims.length > MAX_BATCH_RANK) {
    throw new MoongradError(
      "matmul",
      `batch axes ${
        fmtShape(batch)
      } do not merge into ${MAX_BATCH_RANK} strided axes (${shapes()})`,
    );
  }
  const p = foldBatchIntoRows({
    M,
    N,
    K,
    batch: dims,
    a: { ...oa, batchStrides: sa },
    b: { ...ob, batchStrides: sb },
  });
  return { p, outShape: [...batch, M, N] };
}

function transposed(m: Mat): Mat {
  const r = m.shape.length;
  const shape = [...m.shape];
  const strides = [...m.strides];
  [shape[r - 2], shape[r - 1]] = [shape[r - 1], shape[r - 2]];
  [strides[r - 2], strides[r - 1]] = [strides[r - 1], strides[r - 2]];
  return { shape, strides, offset: m.offset };
}

/**
 * Σ over the broadcast batch axes of x·y, shaped like `target` (a [batch..., R, C] shape).
 * When `target` has no batch axes and both operands can walk batch and inner axes as one
 * strided axis, this is one matrix product with a longer inner dimension instead of a
 * batched product followed by a reduction.
 */
function productSummedTo(
  tx: Tensor,
  x: Mat,
  ty: Tensor,
  y: Mat,
  target: readonly number[],
): Tensor {
  const d = summedPlan(tx, x, ty, y, target);
  if (d) {
    if (!(d.q instanceof Tensor)) record1(d.q);
    return finish(d);
  }
  const full = product(tx, x, ty, y);
  const s = sumTo(full, target);
  if (s !== full) full.dispose();
  return s;
}

/** A product planned but not yet recorded, and the shape its output is viewed as after. */
interface Deferred {
  q: Planned | Tensor;
  target: readonly number[];
}

/** The output of a recorded `Deferred`, reshaped to its target (a view: it is contiguous). */
function finish(d: Deferred): Tensor {
  const out = d.q instanceof Tensor ? d.q : d.q.out;
  if (out.rank === d.target.length) return out;
  const r = reshape(out, d.target);
  out.dispose();
  return r;
}

/**
 * `productSummedTo` as one planned product, when the batch folds into the inner dimension
 * (`target` without batch axes and both operands walking batch and inner axes with one
 * stride); null when it needs a batched product and a reduction.
 */
function summedPlan(
  tx: Tensor,
  x: Mat,
  ty: Tensor,
  y: Mat,
  target: readonly number[],
): Deferred | null {
  const rx = x.shape.length;
  const ry = y.shape.length;
  const xBatch = x.shape.slice(0, -2);
  const yBatch = y.shape.slice(0, -2);
  const targetBatched = target.slice(0, -2).some((d) => d !== 1);
  if (targetBatched || xBatch.length !== yBatch.length) {
    // No reduction at all when the product already has the target's shape.
    const r = resolve(tx, x, ty, y);
    const same = r.outShape.length === target.length && r.outShape.every((d, i) => d === target[i]);
    return same ? { q: plan(r.p, tx, ty, r.outShape, null), target } : null;
  }
  // Merge (batch..., inner) of x (inner = its columns) and of y (inner = its rows).
  const xf = mergeAxes(
    [...xBatch, x.shape[rx - 1]],
    [...x.strides.slice(0, -2), x.strides[rx - 1]],
  );
  const yf = mergeAxes(
    [...yBatch, y.shape[ry - 2]],
    [...y.strides.slice(0, -2), y.strides[ry - 2]],
  );
  if (!xf || !yf || !xBatch.every((d, i) => d === yBatch[i])) return null;
  const R = x.shape[rx - 2];
  const C = y.shape[ry - 1];
  const Q = xf.size;
  const r = resolve(
    tx,
    { shape: [R, Q], strides: [x.strides[rx - 2], xf.stride], offset: x.offset },
    ty,
    { shape: [Q, C], strides: [yf.stride, y.strides[ry - 1]], offset: y.offset },
  );
  return { q: plan(r.p, tx, ty, r.outShape, null), target };
}

/** One stride that walks the given axes in row-major order, or null when there is none. */
function mergeAxes(dims: number[], strides: number[]): { size: number; stride: number } | null {
  let size = 1;
  let stride = 0;
  let inner = -1; // index of the innermost axis of size > 1 seen so far
  for (let i = dims.length - 1; i >= 0; i--) {
    if (dims[i] === 1) continue;
    if (inner < 0) stride = strides[i];
    else if (strides[i] !== strides[inner] * dims[inner]) return null;
    inner = i;
    size *= dims[i];
  }
  return { size, stride };
}

/**
 * Matrix product with NumPy semantics: 1-D `a` is a row vector and 1-D `b` a column vector
 * (their unit axis is dropped from the result), leading axes broadcast as batch axes
 * ([2, 1, M, K] @ [3, K, N] -> [2, 3, M, N]). f32 or f16 (accumulated in f32). Transposed and
 * broadcast views are read in place through their strides. Differentiable.
 *
 * @example Matrix, batched and vector products
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([[1, 2], [3, 4]]);
 * console.log(await mg.matmul(a, a).toArray()); // [[7, 10], [15, 22]]
 * console.log(await a.matmul(mg.tensor([1, 1])).toArray()); // [3, 7] (a vector on the right)
 * console.log(mg.matmul(mg.ones([5, 1, 2, 3]), mg.ones([4, 3, 6])).shape); // [5, 4, 2, 6]
 * ```
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  validate(a, b);
  return product2(a, b, null);
}

/**
 * c + a·b in one kernel (PyTorch's `addmm` / `baddbmm` with β = α = 1, batched like
 * `matmul`): the product's epilogue adds c, so a residual connection after a projection costs
 * no separate `add`. Bit-identical to `mg.add(c, mg.matmul(a, b))` (the sum is formed in f32
 * and rounded once, as `add` does). Fused when a and b are at least 2-D and c is contiguous,
 * shaped and typed like the product and not stored with a or b; otherwise computed as that
 * add (same result). Differentiable in a, b and c.
 *
 * @example A projection plus a residual
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2]]), w = mg.tensor([[1, 0], [0, 1]]), r = mg.tensor([[10, 20]]);
 * console.log(await mg.addmm(r, x, w).toArray()); // [[11, 22]]
 * ```
 */
export function addmm(c: Tensor, a: Tensor, b: Tensor): Tensor {
  validate(a, b);
  if (!(c instanceof Tensor)) {
    throw new MoongradError("addmm", `argument c must be a Tensor, got ${String(c)}`);
  }
  c.storage("addmm");
  if (a.rank >= 2 && b.rank >= 2 && c.dtype === a.dtype && c.isContiguous) {
    const full = [...batchShape(asMatrix(a, "a"), asMatrix(b, "b"), () => ""), a.shape[a.rank - 2]];
    full.push(b.shape[b.rank - 1]);
    const buf = c.storage("addmm").buf;
    const shared = [a, b].some((t) => t.storage("addmm").buf === buf);
    if (!shared && c.rank === full.length && c.shape.every((d, i) => d === full[i])) {
      return product2(a, b, c);
    }
  }
  return scope(() => add(c, matmul(a, b)));
}

/** a·b, plus `addend` (already checked to fit, see `addmm`) in the epilogue when given. */
function product2(a: Tensor, b: Tensor, addend: Tensor | null): Tensor {
  const ma = asMatrix(a, "a");
  const mb = asMatrix(b, "b");
  const full = product(a, ma, b, mb, addend);
  const outShape = full.shape.slice(0, -2);
  if (a.rank > 1) outShape.push(full.shape[full.rank - 2]);
  if (b.rank > 1) outShape.push(full.shape[full.rank - 1]);
  const fullShape = full.shape;
  let out = full;
  if (outShape.length !== full.rank) {
    out = full.view(outShape, contiguousStrides(outShape), full.offset);
    full.dispose();
  }
  // The vjp reads the retained handles, so callers may dispose a and b after the forward.
  let [sa, sb] = [a, b];
  const inputs = addend ? [a, b, addend] : [a, b];
  record(out, addend ? "addmm" : "matmul", inputs, (g, needs, _saved, priors) => {
    // g as [batch..., M, N]: re-insert the unit axes dropped for 1-D operands.
    const g2 = g.view(fullShape, gradStrides(g, a.rank === 1, b.rank === 1), g.offset);
    const gm: Mat = { shape: [...g2.shape], strides: [...g2.strides], offset: g2.offset };
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    // dA straight into a's shape (a is a matrix whose batch axes are the output's: no sum,
    // no reshape) can fold the gradient a received from its other uses into its epilogue.
    const direct = a.rank >= 2 &&
      fullShape.slice(0, -2).every((d, i) => d === a.shape[i]) &&
      fullShape.length === a.rank;
    const prior = needs[0] && direct ? usablePrior(priors, 0, a.shape, a.dtype, g2, sb) : null;
    // Both gradients as single products: one paired launch (recordPair).
    let da: Deferred | null = null;
    if (needs[0] && needs[1]) {
      if (prior) {
        const r = resolve(g2, gm, sb, transposed(mb));
        da = { q: plan(r.p, g2, sb, r.outShape, prior), target: r.outShape };
      } else da = summedPlan(g2, gm, sb, transposed(mb), ma.shape);
    }
    // b a transposed view of a contiguous matrix (a Linear layer's weight): dB in b's memory
    // order, as the transposed view of (dC)ᵀ·A, so the weight's gradient is contiguous.
    const colMajorB = b.rank === 2 && mb.strides[0] === 1 && mb.strides[1] === mb.shape[0] &&
      mb.shape[0] > 1 && mb.shape[1] > 1;
    const dbOperands = (): [Tensor, Mat, Tensor, Mat, number[]] =>
      colMajorB
        ? [g2, transposed(gm), sa, ma, [mb.shape[1], mb.shape[0]]]
        : [sa, transposed(ma), g2, gm, [...mb.shape]];
    const asB = (r: Tensor): Tensor => {
      if (!colMajorB) return r.rank === b.rank ? r : reshapeAndDispose(r, b.shape);
      const v = r.view([...b.shape], [1, b.shape[0]], r.offset);
      r.dispose();
      return v;
    };
    const db = da ? summedPlan(...dbOperands()) : null;
    if (da && db) {
      if (da.q instanceof Tensor || db.q instanceof Tensor) {
        for (const d of [da, db]) if (!(d.q instanceof Tensor)) record1(d.q);
      } else recordPair(da.q, db.q);
      if (prior) priors!.absorb(0);
      const [ra, rb] = [finish(da), finish(db)];
      ga = ra.rank === a.rank ? ra : reshapeAndDispose(ra, a.shape);
      gb = asB(rb);
    } else {
      // Not both as single products: record what was planned, then the rest one by one.
      if (da) (da.q instanceof Tensor ? da.q : da.q.out).dispose();
      if (prior) {
        ga = product(g2, gm, sb, transposed(mb), prior);
        priors!.absorb(0);
      } else if (needs[0]) {
        const r = productSummedTo(g2, gm, sb, transposed(mb), ma.shape);
        ga = r.rank === a.rank ? r : reshapeAndDispose(r, a.shape);
      }
      if (needs[1]) gb = asB(productSummedTo(...dbOperands()));
    }
    g2.dispose();
    // The addend's gradient is the upstream gradient itself (autograd aliases it).
    return addend ? [ga, gb, needs[2] ? g : null] : [ga, gb];
  }, [a, b]);
  if (out.gradFn) [sa, sb] = out.gradFn.saved;
  return out;
}

function reshapeAndDispose(t: Tensor, shape: readonly number[]): Tensor {
  const r = reshape(t, shape);
  t.dispose();
  return r;
}

/** g's strides with zero-stride unit axes inserted where 1-D operands dropped one. */
function gradStrides(g: Tensor, aVec: boolean, bVec: boolean): number[] {
  const s = [...g.strides];
  if (aVec && bVec) return [...s, 0, 0];
  if (aVec) return [...s.slice(0, -1), 0, s[s.length - 1]];
  if (bVec) return [...s, 0];
  return s;
}

/**
 * Grouped product for ops/moe.ts: C[r, j] = Σ_i a[r, i] · W_e[i, j] for every row r of expert
 * e's group (rows offsets[e]..offsets[e+1]−1), where W_e is w[e] ([E, d1, d2], any strides)
 * transposed when `transposeW` (a Linear layer's [out, in] weight), as is otherwise. `a` f32
 * [M, K] is read through its strides; `offsets` i32 [E + 1] must be contiguous from element 0
 * and hold non-decreasing row offsets ending at M. Returns a new contiguous [M, N], plus
 * `prior` (contiguous f32 [M, N]) when given: a backward pass's accumulated gradient folded
 * into the epilogue. Uses the matmul tile configuration; not recorded for autograd (the
 * caller records).
 */
export function groupedRowsProduct(
  a: Tensor,
  w: Tensor,
  offsets: Tensor,
  transposeW: boolean,
  prior: Tensor | null = null,
): Tensor {
  return launch(...groupedRowsArgs(a, w, offsets, transposeW), prior);
}

/** `groupedRowsProduct`'s problem, operands and output shape. */
function groupedRowsArgs(
  a: Tensor,
  w: Tensor,
  offsets: Tensor,
  transposeW: boolean,
): [Problem, Tensor, Tensor, number[]] {
  const [M, K] = a.shape;
  const [E, d1, d2] = w.shape;
  const [sE, s1, s2] = w.strides;
  const N = transposeW ? d1 : d2;
  const p: Problem = {
    M,
    N,
    K,
    batch: [],
    a: { offset: a.offset, rowStride: a.strides[0], colStride: a.strides[1], batchStrides: [] },
    b: {
      offset: w.offset,
      rowStride: transposeW ? s2 : s1,
      colStride: transposeW ? s1 : s2,
      batchStrides: [],
    },
    group: { mode: "rows", offsets, experts: E, bExpertStride: sE },
  };
  return [p, a, w, [M, N]];
}

/**
 * A grouped product's two gradients (ops/moe.ts `groupedMatmul` backward) in one paired launch
 * (`recordPair`): `groupedRowsProduct(g, w, offsets, false, prior)` (dA) and
 * `groupedInnerProduct(g, a, offsets)` (dW). Bit-identical to the two calls.
 */
export function groupedRowsAndInner(
  g: Tensor,
  w: Tensor,
  a: Tensor,
  offsets: Tensor,
  prior: Tensor | null,
): [Tensor, Tensor] {
  const x = plan(...groupedRowsArgs(g, w, offsets, false), prior);
  const y = plan(...groupedInnerArgs(g, a, offsets), null);
  if (x instanceof Tensor || y instanceof Tensor) {
    for (const q of [x, y]) if (!(q instanceof Tensor)) record1(q);
  } else recordPair(x, y);
  return [x instanceof Tensor ? x : x.out, y instanceof Tensor ? y : y.out];
}

/**
 * Grouped weight gradient for ops/moe.ts: out[e] = Σ over the rows r of group e (rows
 * offsets[e]..offsets[e+1]−1) of p[r]ᵀ q[r], `p` f32 [M, A], `q` f32 [M, B] (any strides) →
 * new contiguous [E, A, B], zeros for an empty group. `offsets` i32 [E + 1] contiguous from
 * element 0. Deterministic (each output sums its group's rows in order). Not recorded.
 */
export function groupedInnerProduct(p: Tensor, q: Tensor, offsets: Tensor): Tensor {
  return launch(...groupedInnerArgs(p, q, offsets));
}

/** `groupedInnerProduct`'s problem, operands and output shape. */
function groupedInnerArgs(
  p: Tensor,
  q: Tensor,
  offsets: Tensor,
): [Problem, Tensor, Tensor, number[]] {
  const E = offsets.shape[0] - 1;
  const [M, A] = p.shape;
  const B = q.shape[1];
  const prob: Problem = {
    M: A,
    N: B,
    K: M,
    batch: [],
    a: { offset: p.offset, rowStride: p.strides[1], colStride: p.strides[0], batchStrides: [] },
    b: { offset: q.offset, rowStride: q.strides[0], colStride: q.strides[1], batchStrides: [] },
    group: { mode: "inner", offsets, experts: E, bExpertStride: 0 },
  };
  return [prob, p, q, [E, A, B]];
}
