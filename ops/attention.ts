/**
 * Fused causal self-attention (flash-attention style) with forward, backward and the per-head
 * maximum pre-softmax logit that MuonClip's QK-Clip needs.
 *
 * Forward: one workgroup per (block of R queries, batch, head). Threads form an R × L grid
 * (row = query, lane = key of the current key block, then = output column). For every block
 * of L keys the workgroup computes the R × L logits from D-chunks staged in workgroup memory,
 * updates each row's running max / sum / accumulator (online softmax) and adds P·V. It writes
 * `out`, the per-row logsumexp (kept for backward) and the per-row max logit; the row maxima
 * are then reduced to one value per head by a second small pass (no atomics, no readback).
 *
 * Backward recomputes P = exp(s − lse) with two kernels, so no atomics are needed: one over
 * query blocks computes dq, one over key blocks computes dk and dv (for each query head;
 * k/v shared by several query heads are then summed over their group).
 *
 * Workgroup memory holds vec4s (D is staged 4L columns at a time), so one shared read feeds
 * four multiply-adds, and each thread keeps one vec4 accumulator per 4L-column group.
 * Sizes, strides and offsets travel as kernel parameters; the source is specialised only on
 * the dtype, the tile configuration and the number of 4L-column groups (a power of two
 * ≥ ceil(D / 4L)), so a new T, S, B or H compiles nothing new.
 * Inputs are read through their strides (a [B, T, H, D] tensor permuted to [B, H, T, D] is not
 * copied). f16 inputs are computed in f32; lse and max logits are always f32.
 *
 * NaN: each thread ORs a bit test of its logits into a flag (max() may drop NaN); a row with a
 * NaN or +Inf logit (or only −Inf ones) writes NaN output and lse, and NaN max logit for a NaN.
 * Backward recomputes P with a NaN-keeping exp, so those rows give NaN gradients.
 *
 * CPU adapters (llvmpipe/lavapipe) default to `direct` kernels (CPU_ATTENTION_CONFIG): one
 * thread per query row (forward, dq) or key row (dk/dv) holding its head vectors and
 * accumulators as vec4 registers and walking the other side's rows in global memory, with no
 * workgroup memory and no barriers (the tiled kernels spend their time in barriers and
 * shared-memory gathers there). Measured on llvmpipe (2 cores, busy machine) for the tiny
 * model's B 4, H 4, T 64, Dqk 24, Dv 16: forward 124 → 9 ms, dq 118 → 6 ms, dk/dv 162 → 9 ms.
 */
import { deviceInfo } from "../core/device.ts";
import { isFloat, wgslType } from "../core/dtype.ts";
import type { DType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, type Kernel, kernel, type KernelDef } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { grid1d, linearId } from "./grid.ts";
import { checkTileConfig } from "./tile_config.ts";
import { max, sum } from "./reduce.ts";
import { reshape } from "./layout.ts";
import { concat } from "./concat.ts";

/**
 * Tile configuration of the attention kernels (tuning is data, not code).
 *
 * @example Use the CPU-adapter kernels explicitly
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const cfg: mg.AttentionConfig = { rows: 64, lanes: 4, direct: true };
 * const previous = mg.setAttentionConfig(cfg);
 * const q = mg.randn([1, 2, 8, 16], { seed: 0 });
 * console.log(mg.attention(q, q, q).out.shape); // [1, 2, 8, 16]
 * mg.setAttentionConfig(previous);
 * ```
 */
export interface AttentionConfig {
  /**
   * Rows per workgroup: queries (forward, dq) or keys (dk/dv). With `direct`, the workgroup
   * size (one thread per row).
   */
  rows: number;
  /**
   * Lanes per workgroup (a multiple of 4): keys or queries of the inner block; each lane owns
   * 4 output columns of every 4·lanes-wide column group. Unused with `direct`.
   */
  lanes: number;
  /**
   * One thread per query (forward, dq) or key (dk/dv) row, its head vectors and accumulators
   * in registers, the other side's rows read from global memory (vec4 loads when the layout
   * is aligned): no workgroup memory and no barriers, which CPU adapters need (default false).
   */
  direct?: boolean;
}

/**
 * Tiles for GPUs: 16 × 16 threads, 16-wide key/query blocks, 64-wide D-chunks (10.5 KiB
 * shared).
 */
export const DEFAULT_ATTENTION_CONFIG: Readonly<AttentionConfig> = Object.freeze({
  rows: 16,
  lanes: 16,
});

/**
 * Tiles for CPU adapters (llvmpipe/lavapipe), where barriers and shared-memory gathers
 * dominate the tiled kernels: the direct kernels, 64 rows per workgroup.
 */
export const CPU_ATTENTION_CONFIG: Readonly<AttentionConfig> = Object.freeze({
  rows: 64,
  lanes: 4,
  direct: true,
});

let override: AttentionConfig | null = null;

/**
 * The tile configuration in use: the override, else the default for the adapter kind.
 *
 * @example The attention tiles in use on this adapter
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const { rows, lanes, direct } = mg.attentionConfig();
 * console.log(direct ? `direct, ${rows} rows per workgroup` : `${rows} rows x ${lanes} lanes`);
 * ```
 */
export function attentionConfig(): AttentionConfig {
  return { ...currentConfig() };
}

function currentConfig(): AttentionConfig {
  if (override) return override;
  return deviceInfo().isFallbackAdapter ? CPU_ATTENTION_CONFIG : DEFAULT_ATTENTION_CONFIG;
}

/**
 * Overrides the tile configuration of later attention calls (for tuning and tests); null
 * restores the adapter default. Returns the previous override, or null when there was none
 * (pass it back to restore the earlier state). Throws, changing nothing, when the
 * configuration breaks a limit (the message names it). Same contract as `setMatmulConfig`.
 *
 * @example Tiled kernels: 16 query rows x 16 lanes per workgroup
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const previous = mg.setAttentionConfig({ rows: 16, lanes: 16 }); // null: no override before
 * const q = mg.randn([1, 2, 8, 16], { seed: 0 });
 * console.log(mg.attention(q, q, q).out.shape, previous); // [1, 2, 8, 16] null
 * mg.setAttentionConfig(previous); // back to the adapter default
 * ```
 */
export function setAttentionConfig(next: AttentionConfig | null): AttentionConfig | null {
  if (next !== null) checkTileConfig("setAttentionConfig", next, attentionConfigProblems);
  const prev = override;
  override = next === null ? null : { ...next };
  return prev;
}

/** The limits an attention tile configuration breaks (none: it is valid on this device). */
function attentionConfigProblems(c: AttentionConfig): string[] {
  const problems: string[] = [];
  const ints = c.direct ? (["rows"] as const) : (["rows", "lanes"] as const);
  for (const k of ints) {
    if (!Number.isInteger(c[k]) || c[k] < 1) {
      problems.push(`${k} must be a positive integer, got ${c[k]}`);
    }
  }
  if (c.direct !== undefined && typeof c.direct !== "boolean") {
    problems.push(`direct must be a boolean, got ${c.direct}`);
  }
  if (problems.length) return problems;
  if (c.direct) {
    if (c.rows > MAX_ATTENTION_THREADS) {
      problems.push(
        `direct kernels run rows = ${c.rows} threads; the limit is ${MAX_ATTENTION_THREADS}`,
      );
    }
    return problems;
  }
  if (c.lanes % 4 !== 0) problems.push(`lanes must be a multiple of 4, got ${c.lanes}`);
  if (c.rows * c.lanes > MAX_ATTENTION_THREADS) {
    problems.push(
      `rows·lanes = ${c.rows * c.lanes} threads exceeds the limit ${MAX_ATTENTION_THREADS}`,
    );
  }
  const limit = deviceInfo().limits.maxComputeWorkgroupStorageSize;
  const bytes = sharedBytes(c.rows, c.lanes);
  if (bytes > limit) {
    problems.push(`the tiles need ${bytes} bytes of workgroup memory; the device allows ${limit}`);
  }
  return problems;
}

/** Most threads per workgroup the attention kernels use (WebGPU's guaranteed minimum). */
const MAX_ATTENTION_THREADS = 256;

/**
 * Options of `attention`.
 *
 * @example Non-causal attention with an explicit scale
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.randn([1, 4, 6, 8], { seed: 1 });
 * const opts: mg.AttentionOptions = { causal: false, scale: 1 / Math.sqrt(8) };
 * console.log(mg.attention(q, q, q, opts).out.shape); // [1, 4, 6, 8]
 * ```
 */
export interface AttentionOptions {
  /** Multiplier of q·k before the softmax; default Dqk^-0.5. */
  scale?: number;
  /**
   * Causal mask (default true): query i attends keys j ≤ i + (S − T), i.e. queries are aligned
   * to the end of the keys (T == S for training, T < S for decode with a cache).
   */
  causal?: boolean;
  /** Expected number of key/value heads (checked against k and v when given). */
  kvHeads?: number;
}

/**
 * What `attention` returns.
 *
 * @example The output and the per-head max logit (what QK-Clip reads)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.randn([2, 4, 8, 16], { seed: 2 });
 * const res: mg.AttentionResult = mg.attention(q, q, q);
 * console.log(res.out.shape, res.maxLogits.shape); // [2, 4, 8, 16] [4]
 * ```
 */
export interface AttentionResult {
  /**
   * Attention output [B, H, T, Dv] in the input dtype; differentiable w.r.t. q, k, v. Its
   * storage is heads-inner ([B, T, H, Dv] memory order: permuting the heads next to the
   * features and merging them is a view).
   */
  out: Tensor;
  /**
   * f32 [H]: per head, the maximum over the batch and over attended pairs of the signed
   * pre-softmax logit (q_i·k_j)·scale. Not differentiable.
   */
  maxLogits: Tensor;
}

/** Resolved sizes of one call. */
interface Dims {
  B: number;
  H: number;
  T: number;
  S: number;
  Dqk: number;
  Dv: number;
  Hk: number;
  Hv: number;
  scale: number;
  causal: boolean;
  dtype: DType;
}

// ---- parameters --------------------------------------------------------------------------
/** Index of each strided operand in the per-operand parameter arrays. */
const SLOT = { q: 0, k: 1, v: 2, g: 3 } as const;

/**
 * Every attention kernel's parameters: sizes, scale, causal flag and S − T, query heads per
 * k and v head, blocks per (b, h), workgroups (or rows of the direct and row-dot kernels),
 * then per strided operand (q, k, v, g; by SLOT) its offset and strides of B, H, T, D.
 */
const ATTN = params("attention", {
  B: "u32",
  H: "u32",
  T: "u32",
  S: "u32",
  Dqk: "u32",
  Dv: "u32",
  scale: "f32",
  causal: "u32",
  off: "u32",
  hPerK: "u32",
  hPerV: "u32",
  blocks: "u32",
  groups: "u32",
  offsets: ["u32", 4],
  strideB: ["u32", 4],
  strideH: ["u32", 4],
  strideT: ["u32", 4],
  strideD: ["u32", 4],
});

function attnParams(
  d: Dims,
  blocks: number,
  groups: number,
  ops: { q?: Tensor; k?: Tensor; v?: Tensor; g?: Tensor },
): Uint32Array {
  const ts = [ops.q, ops.k, ops.v, ops.g];
  const stride = (axis: number) => ts.map((t) => t?.strides[axis] ?? 0);
  return ATTN.pack({
    B: d.B,
    H: d.H,
    T: d.T,
    S: d.S,
    Dqk: d.Dqk,
    Dv: d.Dv,
    scale: d.scale,
    causal: d.causal,
    off: d.causal ? d.S - d.T : 0,
    hPerK: d.H / d.Hk,
    hPerV: d.H / d.Hv,
    blocks,
    groups,
    offsets: ts.map((t) => t?.offset ?? 0),
    strideB: stride(0),
    strideH: stride(1),
    strideT: stride(2),
    strideD: stride(3),
  });
}

// ---- WGSL generation ---------------------------------------------------------------------
// Workgroup memory holds vec4s: one shared read feeds four multiply-adds (on CPU adapters a
// shared read with a per-thread index is a gather, so this matters as much as on GPUs).
// A thread (r, c) owns columns 4c..4c+3 of each 4L-wide column group of an output row.

/** Column groups (4·lanes wide) for a head dim: a power of two ≥ ceil(D / 4L). */
function groupsFor(dim: number, lanes: number): number {
  let n = 1;
  while (n * 4 * lanes < dim) n *= 2;
  return n;
}

/** Bytes of workgroup memory the kernels use with rows R and lanes L (two R×L f32 arrays). */
function sharedBytes(R: number, L: number): number {
  return 16 * (R * L + L * (L + 1)) + 4 * 2 * R * L;
}

const COMMON = `
const NEG: f32 = -0x1.fffffep+127f; // the lowest finite f32 (Tint rejects anything beyond)
// A row's max logit: NaN when any attended logit is NaN (found by bit tests: max() may drop
// NaN), −Inf when all are −Inf (the running max never left NEG).
fn rowMax(m: f32, nanSeen: bool) -> f32 {
  return select(select(m, -mg_inf(), m == NEG), mg_nan(), nanSeen);
}`;

/** WGSL lets shared by every kernel: sizes and the (b, h, block) of this workgroup. */
function setup(): string {
  return `
  let wg = wid.y * nwg.x + wid.x;
  if (wg >= p_groups()) { return; }
  let B = p_B(); let H = p_H(); let T = p_T(); let S = p_S();
  let DQ = p_Dqk(); let DV = p_Dv();
  let scale = p_scale();
  let causal = p_causal() != 0u;
  let off = p_off();
  let nb = p_blocks();
  let blk = wg % nb;
  let bh = wg / nb;
  let h = bh % H;
  let b = bh / H;
  let r = lid.y;
  let c = lid.x;`;
}

/** Base offset and T/D strides of operand `slot` for head expression `head`. */
function base(name: string, slot: number, head: string): string {
  return `
  let ${name}B = p_offsets(${slot}u) + b * p_strideB(${slot}u) + (${head}) * p_strideH(${slot}u);
  let ${name}T = p_strideT(${slot}u);
  let ${name}D = p_strideD(${slot}u);`;
}

/** Rows of one operand as a kernel stages them: binding, base prefix, first row, row count. */
interface Rows {
  buf: string;
  v: string;
  row0: string;
  rows: string;
}

/**
 * WGSL staging rows op.row0 + 0..count/L of `op`, columns d0 + 0..4L, as vec4s: element e
 * (row e / L, columns d0 + 4(e % L) + 0..3) goes to `dst` (an expression of e, row, col4).
 * Out-of-range rows and columns read as 0.
 */
function stage(
  L: number,
  NT: number,
  op: Rows,
  count: number,
  d0: string,
  dim: string,
  dst: string,
) {
  const col = (k: number) => (k === 0 ? "dd" : `dd + ${k}u`);
  const loads = [0, 1, 2, 3].map((k) => `
        if (${col(k)} < ${dim}) { x[${k}] = f32(${op.buf}[rb + (${col(k)}) * ${op.v}D]); }`).join(
    "",
  );
  return `
    for (var e = lidx; e < ${count}u; e += ${NT}u) {
      let row = e / ${L}u;
      let col4 = e % ${L}u;
      let rr = ${op.row0} + row;
      let dd = ${d0} + col4 * 4u;
      var x = vec4<f32>(0.0);
      if (rr < ${op.rows}) {
        let rb = ${op.v}B + rr * ${op.v}T;${loads}
      }
      ${dst} = x;
    }`;
}

/**
 * WGSL adding to `acc` the dot product over `dim` of row r of operand `a` (rows a.row0 + 0..R)
 * with row c of operand `b` (rows b.row0 + 0..L), 4L columns at a time through workgroup
 * memory (`ta` [R][L] and padded `tb` [L][L + 1] vec4s). With `trailing` false the last chunk
 * ends without a barrier (the caller's next barrier comes before `ta`/`tb` are written again).
 */
function chunkDot(
  R: number,
  L: number,
  acc: string,
  a: Rows,
  b: Rows,
  dim: string,
  trailing: boolean,
) {
  const NT = R * L;
  return `
  for (var d0 = 0u; d0 < ${dim}; d0 += ${4 * L}u) {${stage(L, NT, a, R * L, "d0", dim, "ta[e]")}${
    stage(L, NT, b, L * L, "d0", dim, `tb[row * ${L + 1}u + col4]`)
  }
    workgroupBarrier();
    let wl = (min(${4 * L}u, ${dim} - d0) + 3u) / 4u;
    for (var x = 0u; x < wl; x++) { ${acc} += dot(ta[r * ${L}u + x], tb[c * ${L + 1}u + x]); }
    ${trailing ? "workgroupBarrier();" : `if (d0 + ${4 * L}u < ${dim}) { workgroupBarrier(); }`}
  }`;
}

/**
 * WGSL that, for each column group g < n with 4L·g < dim, stages rows op.row0 + 0..L of an
 * operand (columns 4L·g + 0..4L) in `tb` and adds Σ_x w[r][x] · tile[x][4c..4c+3] to the vec4
 * accumulator `${acc}${g}` (first scaled by `decay` when given). `w` is an R × L f32 array
 * read four at a time. Ends with a barrier.
 */
function chunkAccumulate(
  R: number,
  L: number,
  n: number,
  acc: string,
  w: string,
  op: Rows,
  dim: string,
  decay?: string,
): string {
  let s = "";
  for (let g = 0; g < n; g++) {
    const upd = decay ? `${acc}${g} * ${decay} + t` : `${acc}${g} + t`;
    s += `
  if (${g * 4 * L}u < ${dim}) {${stage(L, R * L, op, L * L, `${g * 4 * L}u`, dim, "tb[e]")}
    workgroupBarrier();
    var t = vec4<f32>(0.0);
    for (var x = 0u; x < ${L / 4}u; x++) {
      let pw = ${w}[r * ${L / 4}u + x];
      let tr = x * ${4 * L}u + c;
      t += pw.x * tb[tr] + pw.y * tb[tr + ${L}u] + pw.z * tb[tr + ${2 * L}u] + pw.w * tb[tr + ${
      3 * L
    }u];
    }
    ${acc}${g} = ${upd};
    workgroupBarrier();
  }`;
  }
  return s;
}

function accDecl(name: string, n: number): string {
  return Array.from({ length: n }, (_, i) => `\n  var ${name}${i} = vec4<f32>(0.0);`).join("");
}

/** Stores `${acc}${g}·mul` to `${dst}[rowBase + 4L·g + 4c + k]` for the in-range columns. */
function accStore(
  L: number,
  n: number,
  acc: string,
  dst: string,
  rowBase: string,
  dim: string,
  ty: string,
  mul: string,
): string {
  let s = "";
  for (let g = 0; g < n; g++) {
    s += `
    {
      let o = ${acc}${g} * ${mul};
      let c0 = ${g * 4 * L}u + c * 4u;
      for (var k = 0u; k < 4u; k++) {
        if (c0 + k < ${dim}) { ${dst}[${rowBase} + c0 + k] = ${ty}(o[k]); }
      }
    }`;
  }
  return s;
}

function sharedDecl(R: number, L: number, extra: string[]): string {
  return `${COMMON}
var<workgroup> ta: array<vec4<f32>, ${R * L}>;
var<workgroup> tb: array<vec4<f32>, ${L * (L + 1)}>;
${extra.map((n) => `var<workgroup> ${n}: array<vec4<f32>, ${(R * L) / 4}>;`).join("\n")}`;
}

/** WGSL writing `value` to element (r, c) of an R × L f32 array stored as vec4s. */
function put(arr: string, L: number, value: string): string {
  return `${arr}[r * ${L / 4}u + c / 4u][c % 4u] = ${value};`;
}

/**
 * Builds an attention kernel; with `kvShared` (k and v are views of one buffer, e.g. MLA's
 * [k_nope | k_rope | v] or the latent cache) v is read through k's binding, so the buffer is
 * bound once (binding it twice would cost the runtime an alias copy of the whole buffer).
 */
function kvKernel(kvShared: boolean, def: KernelDef): Kernel {
  if (!kvShared) return kernel(def);
  return kernel({
    ...def,
    bindings: def.bindings.filter((b) => b.name !== "vx"),
    body: def.body.replace(/\bvx\b/g, "kx"),
  });
}

function forwardKernel(ty: string, R: number, L: number, nv: number, kvShared: boolean): Kernel {
  return kvKernel(kvShared, {
    name: "attention_fwd",
    bindings: [
      { name: "qx", type: ty, access: "read" },
      { name: "kx", type: ty, access: "read" },
      { name: "vx", type: ty, access: "read" },
      { name: "out", type: ty, access: "read_write" },
      { name: "lse", type: "f32", access: "read_write" },
      { name: "rmax", type: "f32", access: "read_write" },
    ],
    workgroupSize: [L, R],
    params: ATTN,
    prelude: sharedDecl(R, L, ["ss", "ps"]),
    body: `${setup()}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }
  let q0 = blk * ${R}u;
  let i = q0 + r;
  let rowOk = i < T;
  var kEnd = S;
  if (causal) { kEnd = min(S, q0 + ${R}u + off); }
  var m = NEG;
  var l = 0.0;
  var nanSeen = false;${accDecl("acc", nv)}
  for (var k0 = 0u; k0 < kEnd; k0 += ${L}u) {
    var sc = 0.0;${
      chunkDot(
        R,
        L,
        "sc",
        { buf: "qx", v: "q", row0: "q0", rows: "T" },
        { buf: "kx", v: "k", row0: "k0", rows: "S" },
        "DQ",
        false,
      )
    }
    let j = k0 + c;
    let valid = rowOk && j < S && (!causal || j <= i + off);
    let logit = sc * scale;
    nanSeen = nanSeen | (valid & mg_isnan(logit));
    ${put("ss", L, "select(NEG, logit, valid)")}
    workgroupBarrier();
    var bm4 = vec4<f32>(NEG);
    for (var x = 0u; x < ${L / 4}u; x++) { bm4 = max(bm4, ss[r * ${L / 4}u + x]); }
    let mNew = max(m, max(max(bm4.x, bm4.y), max(bm4.z, bm4.w)));
    let alpha = select(exp(m - mNew), 0.0, m == NEG);
    ${put("ps", L, "select(0.0, exp(logit - mNew), valid)")}
    workgroupBarrier();
    var rs4 = vec4<f32>(0.0);
    for (var x = 0u; x < ${L / 4}u; x++) { rs4 += ps[r * ${L / 4}u + x]; }
    l = l * alpha + (rs4.x + rs4.y) + (rs4.z + rs4.w);
    m = mNew;${
      chunkAccumulate(
        R,
        L,
        nv,
        "acc",
        "ps",
        { buf: "vx", v: "v", row0: "k0", rows: "S" },
        "DV",
        "alpha",
      )
    }
  }
  // The row's NaN flag: OR of its lanes' flags (the loop's last barrier follows every read
  // of ss). A NaN or +Inf logit, or only −Inf ones, make the row NaN (PyTorch's softmax).
  ${put("ss", L, "select(0.0, 1.0, nanSeen)")}
  workgroupBarrier();
  var rowNan = false;
  for (var x = 0u; x < ${L / 4}u; x++) { rowNan = rowNan | any(ss[r * ${
      L / 4
    }u + x] > vec4<f32>(0.0)); }
  let bad = rowNan | (bitcast<u32>(m) == 0x7f800000u) | (m == NEG);
  if (rowOk) {
    let inv = select(1.0 / l, mg_nan(), bad);
    let ob = ((b * T + i) * H + h) * DV; // heads-inner output (see OUT_LAYOUT)${
      accStore(L, nv, "acc", "out", "ob", "DV", ty, "inv")
    }
    if (c == 0u) {
      lse[bh * T + i] = select(m + log(l), mg_nan(), bad);
      rmax[(h * B + b) * T + i] = rowMax(m, rowNan);
    }
  }`,
  });
}

function dqKernel(ty: string, R: number, L: number, nq: number, kvShared: boolean): Kernel {
  return kvKernel(kvShared, {
    name: "attention_dq",
    pairable: true,
    bindings: [
      { name: "qx", type: ty, access: "read" },
      { name: "kx", type: ty, access: "read" },
      { name: "vx", type: ty, access: "read" },
      { name: "gx", type: ty, access: "read" },
      { name: "lse", type: "f32", access: "read" },
      { name: "dvec", type: "f32", access: "read" },
      { name: "dq", type: ty, access: "read_write" },
    ],
    workgroupSize: [L, R],
    params: ATTN,
    prelude: sharedDecl(R, L, ["ss"]),
    body: `${setup()}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }${base("g", SLOT.g, "h")}
  let q0 = blk * ${R}u;
  let i = q0 + r;
  let rowOk = i < T;
  var kEnd = S;
  if (causal) { kEnd = min(S, q0 + ${R}u + off); }
  var lseI = 0.0;
  var dI = 0.0;
  if (rowOk) { lseI = lse[bh * T + i]; dI = dvec[bh * T + i]; }${accDecl("acc", nq)}
  for (var k0 = 0u; k0 < kEnd; k0 += ${L}u) {
    var sc = 0.0;${
      chunkDot(
        R,
        L,
        "sc",
        { buf: "qx", v: "q", row0: "q0", rows: "T" },
        { buf: "kx", v: "k", row0: "k0", rows: "S" },
        "DQ",
        true,
      )
    }
    var dp = 0.0;${
      chunkDot(
        R,
        L,
        "dp",
        { buf: "gx", v: "g", row0: "q0", rows: "T" },
        { buf: "vx", v: "v", row0: "k0", rows: "S" },
        "DV",
        false,
      )
    }
    let j = k0 + c;
    let valid = rowOk && j < S && (!causal || j <= i + off);
    let p = select(0.0, mg_exp(sc * scale - lseI), valid);
    ${put("ss", L, "p * (dp - dI)")}
    workgroupBarrier();${
      chunkAccumulate(R, L, nq, "acc", "ss", { buf: "kx", v: "k", row0: "k0", rows: "S" }, "DQ")
    }
  }
  if (rowOk) {
    let ob = (bh * T + i) * DQ;${accStore(L, nq, "acc", "dq", "ob", "DQ", ty, "scale")}
  }`,
  });
}

/**
 * The key/value gradient kernels' bindings: the four inputs (names, or direct bindings), lse,
 * dvec, then dk and dv, or with `packed` one output holding both rows side by side
 * ([B, H, S, Dqk + Dv]: dk in the first Dqk columns, dv after).
 */
function dkvBindings(ty: string, inputs: string[] | Binding[], packed: boolean): Binding[] {
  const ins = inputs.map((b) =>
    typeof b === "string" ? { name: b, type: ty, access: "read" as const } : b
  );
  return [
    ...ins,
    { name: "lse", type: "f32", access: "read" },
    { name: "dvec", type: "f32", access: "read" },
    { name: "dk", type: ty, access: "read_write" },
    ...(packed ? [] : [{ name: "dv", type: ty, access: "read_write" as const }]),
  ];
}

function dkvKernel(
  ty: string,
  R: number,
  L: number,
  nq: number,
  nv: number,
  kvShared: boolean,
  packed: boolean,
): Kernel {
  return kvKernel(kvShared, {
    name: "attention_dkv",
    pairable: true,
    bindings: dkvBindings(ty, ["qx", "kx", "vx", "gx"], packed),
    workgroupSize: [L, R],
    params: ATTN,
    prelude: sharedDecl(R, L, ["ss", "ps"]),
    body: `${setup()}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }${base("g", SLOT.g, "h")}
  let k0 = blk * ${R}u;
  let j = k0 + r;
  let rowOk = j < S;
  var qStart = 0u;
  if (causal && k0 > off) { qStart = ((k0 - off) / ${L}u) * ${L}u; }${accDecl("dka", nq)}${
      accDecl("dva", nv)
    }
  for (var q0 = qStart; q0 < T; q0 += ${L}u) {
    var sc = 0.0;${
      chunkDot(
        R,
        L,
        "sc",
        { buf: "kx", v: "k", row0: "k0", rows: "S" },
        { buf: "qx", v: "q", row0: "q0", rows: "T" },
        "DQ",
        true,
      )
    }
    var dp = 0.0;${
      chunkDot(
        R,
        L,
        "dp",
        { buf: "vx", v: "v", row0: "k0", rows: "S" },
        { buf: "gx", v: "g", row0: "q0", rows: "T" },
        "DV",
        false,
      )
    }
    let i = q0 + c;
    let valid = rowOk && i < T && (!causal || j <= i + off);
    var lseI = 0.0;
    var dI = 0.0;
    if (i < T) { lseI = lse[bh * T + i]; dI = dvec[bh * T + i]; }
    let p = select(0.0, mg_exp(sc * scale - lseI), valid);
    ${put("ps", L, "p")}
    ${put("ss", L, "p * (dp - dI)")}
    workgroupBarrier();${
      chunkAccumulate(R, L, nv, "dva", "ps", { buf: "gx", v: "g", row0: "q0", rows: "T" }, "DV")
    }${chunkAccumulate(R, L, nq, "dka", "ss", { buf: "qx", v: "q", row0: "q0", rows: "T" }, "DQ")}
  }
  if (rowOk) {
    let kb = (bh * S + j) * ${packed ? "(DQ + DV)" : "DQ"};
    let vb = ${packed ? "kb + DQ" : "(bh * S + j) * DV"};${
      accStore(L, nq, "dka", "dk", "kb", "DQ", ty, "scale")
    }${accStore(L, nv, "dva", packed ? "dk" : "dv", "vb", "DV", ty, "1.0")}
  }`,
  });
}

// ---- direct kernels (CPU adapters) -------------------------------------------------------
// One thread per row; head vectors are held as ceil(D / 4) vec4 registers (the source is
// specialised on those counts, on the workgroup size and on whether every operand can be
// read as vec4: unit D stride, D, offset and other strides multiples of 4).

/** Whether a [B, H, T, D] operand can be read as vec4 rows. */
function aligned4(t: Tensor): boolean {
  return t.strides[3] === 1 && t.shape[3] % 4 === 0 && t.offset % 4 === 0 &&
    t.strides.slice(0, 3).every((x) => x % 4 === 0);
}

/** WGSL `let` declarations of vec4 chunks `${name}0..n−1` of the row at element `row`. */
function loadChunks(
  name: string,
  buf: string,
  vec: boolean,
  n: number,
  row: string,
  op: string,
  dim: string,
): string {
  let s = "";
  for (let c = 0; c < n; c++) {
    if (vec) {
      s += `\n    let ${name}${c} = vec4<f32>(${buf}[(${row}) / 4u + ${c}u]);`;
      continue;
    }
    const comp = [0, 1, 2, 3].map((k) => {
      const d = 4 * c + k;
      return `select(0.0, f32(${buf}[${row} + min(${d}u, ${dim} - 1u) * ${op}D]), ${d}u < ${dim})`;
    });
    s += `\n    let ${name}${c} = vec4<f32>(${comp.join(", ")});`;
  }
  return s;
}

function dotChunks(a: string, b: string, n: number): string {
  return Array.from({ length: n }, (_, c) => `dot(${a}${c}, ${b}${c})`).join(" + ");
}

/** WGSL storing `${acc}c · mul` to `${dst}[rowBase + 4c + k]` for the in-range columns. */
function storeChunks(
  acc: string,
  n: number,
  dst: string,
  rowBase: string,
  dim: string,
  ty: string,
  mul: string,
): string {
  let s = "";
  for (let c = 0; c < n; c++) {
    s += `\n    { let o = ${acc}${c} * ${mul};`;
    for (let k = 0; k < 4; k++) {
      s += `\n      if (${4 * c + k}u < ${dim}) { ${dst}[${rowBase} + ${
        4 * c + k
      }u] = ${ty}(o[${k}]); }`;
    }
    s += " }";
  }
  return s;
}

function directSetup(wg: number, len: "T" | "S"): string {
  return `
  let row = ${linearId(wg)};
  if (row >= p_groups()) { return; }
  let B = p_B(); let H = p_H(); let T = p_T(); let S = p_S();
  let DQ = p_Dqk(); let DV = p_Dv();
  let scale = p_scale();
  let causal = p_causal() != 0u;
  let off = p_off();
  let bh = row / ${len};
  let h = bh % H;
  let b = bh / H;`;
}

function directBindings(ty: string, vec: boolean, names: string[]) {
  return names.map((name) => ({ name, type: vec ? `vec4<${ty}>` : ty, access: "read" as const }));
}

function forwardDirect(
  ty: string,
  wg: number,
  nq: number,
  nv: number,
  vec: boolean,
  kvShared: boolean,
): Kernel {
  return kvKernel(kvShared, {
    name: "attention_fwd_direct",
    bindings: [
      ...directBindings(ty, vec, ["qx", "kx", "vx"]),
      { name: "out", type: ty, access: "read_write" },
      { name: "lse", type: "f32", access: "read_write" },
      { name: "rmax", type: "f32", access: "read_write" },
    ],
    workgroupSize: [wg],
    params: ATTN,
    prelude: COMMON,
    body: `${directSetup(wg, "T")}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }
  let i = row % T;${loadChunks("q", "qx", vec, nq, "qB + i * qT", "q", "DQ")}
  var kEnd = S;
  if (causal) { kEnd = min(S, i + off + 1u); }
  var m = NEG;
  var l = 0.0;
  var nanSeen = false;${accDecl("acc", nv)}
  for (var j = 0u; j < kEnd; j++) {${loadChunks("k", "kx", vec, nq, "kB + j * kT", "k", "DQ")}
    let sc = (${dotChunks("q", "k", nq)}) * scale;
    nanSeen = nanSeen | mg_isnan(sc);
    let mNew = max(m, sc);
    let alpha = exp(m - mNew);
    let p = exp(sc - mNew);
    l = l * alpha + p;
    m = mNew;${loadChunks("v", "vx", vec, nv, "vB + j * vT", "v", "DV")}${
      Array.from({ length: nv }, (_, c) =>
        `\n    acc${c} = fma(vec4<f32>(p), v${c}, acc${c} * alpha);`)
        .join("")
    }
  }
  // A NaN or +Inf logit, or only −Inf ones, make the row NaN (PyTorch's softmax).
  let bad = nanSeen | (bitcast<u32>(m) == 0x7f800000u) | (m == NEG);
  let inv = select(1.0 / l, mg_nan(), bad);${
      storeChunks("acc", nv, "out", "((b * T + i) * H + h) * DV", "DV", ty, "inv")
    }
  lse[row] = select(m + log(l), mg_nan(), bad);
  rmax[(h * B + b) * T + i] = rowMax(m, nanSeen);`,
  });
}

function dqDirect(
  ty: string,
  wg: number,
  nq: number,
  nv: number,
  vec: boolean,
  kvShared: boolean,
): Kernel {
  return kvKernel(kvShared, {
    name: "attention_dq_direct",
    pairable: true,
    bindings: [
      ...directBindings(ty, vec, ["qx", "kx", "vx", "gx"]),
      { name: "lse", type: "f32", access: "read" },
      { name: "dvec", type: "f32", access: "read" },
      { name: "dq", type: ty, access: "read_write" },
    ],
    workgroupSize: [wg],
    params: ATTN,
    prelude: COMMON,
    body: `${directSetup(wg, "T")}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }${base("g", SLOT.g, "h")}
  let i = row % T;${loadChunks("q", "qx", vec, nq, "qB + i * qT", "q", "DQ")}${
      loadChunks("g", "gx", vec, nv, "gB + i * gT", "g", "DV")
    }
  var kEnd = S;
  if (causal) { kEnd = min(S, i + off + 1u); }
  let lseI = lse[row];
  let dI = dvec[row];${accDecl("acc", nq)}
  for (var j = 0u; j < kEnd; j++) {${loadChunks("k", "kx", vec, nq, "kB + j * kT", "k", "DQ")}${
      loadChunks("v", "vx", vec, nv, "vB + j * vT", "v", "DV")
    }
    let p = mg_exp((${dotChunks("q", "k", nq)}) * scale - lseI);
    let ds = vec4<f32>(p * ((${dotChunks("g", "v", nv)}) - dI));${
      Array.from({ length: nq }, (_, c) => `\n    acc${c} = fma(ds, k${c}, acc${c});`).join("")
    }
  }${storeChunks("acc", nq, "dq", "row * DQ", "DQ", ty, "scale")}`,
  });
}

function dkvDirect(
  ty: string,
  wg: number,
  nq: number,
  nv: number,
  vec: boolean,
  kvShared: boolean,
  packed: boolean,
): Kernel {
  return kvKernel(kvShared, {
    name: "attention_dkv_direct",
    pairable: true,
    bindings: dkvBindings(ty, directBindings(ty, vec, ["qx", "kx", "vx", "gx"]), packed),
    workgroupSize: [wg],
    params: ATTN,
    prelude: COMMON,
    body: `${directSetup(wg, "S")}${base("q", SLOT.q, "h")}${base("k", SLOT.k, "h / p_hPerK()")}${
      base("v", SLOT.v, "h / p_hPerV()")
    }${base("g", SLOT.g, "h")}
  let j = row % S;${loadChunks("k", "kx", vec, nq, "kB + j * kT", "k", "DQ")}${
      loadChunks("v", "vx", vec, nv, "vB + j * vT", "v", "DV")
    }
  var qStart = 0u;
  if (causal && j > off) { qStart = j - off; }${accDecl("dka", nq)}${accDecl("dva", nv)}
  for (var i = qStart; i < T; i++) {${loadChunks("q", "qx", vec, nq, "qB + i * qT", "q", "DQ")}${
      loadChunks("g", "gx", vec, nv, "gB + i * gT", "g", "DV")
    }
    let p = mg_exp((${dotChunks("q", "k", nq)}) * scale - lse[bh * T + i]);
    let pv = vec4<f32>(p);
    let ds = vec4<f32>(p * ((${dotChunks("g", "v", nv)}) - dvec[bh * T + i]));${
      Array.from({ length: nv }, (_, c) => `\n    dva${c} = fma(pv, g${c}, dva${c});`).join("")
    }${Array.from({ length: nq }, (_, c) => `\n    dka${c} = fma(ds, q${c}, dka${c});`).join("")}
  }${storeChunks("dka", nq, "dk", packed ? "row * (DQ + DV)" : "row * DQ", "DQ", ty, "scale")}${
      storeChunks(
        "dva",
        nv,
        packed ? "dk" : "dv",
        packed ? "row * (DQ + DV) + DQ" : "row * DV",
        "DV",
        ty,
        "1.0",
      )
    }`,
  });
}

const ROW_WG = 64;

/** D_i = Σ_d dO[i, d] · O[i, d] for every row (b, h, i); O is heads-inner [B, T, H, Dv]. */
function rowDotKernel(ty: string): Kernel {
  return kernel({
    name: "attention_rowdot",
    bindings: [
      { name: "gx", type: ty, access: "read" },
      { name: "ox", type: ty, access: "read" },
      { name: "dvec", type: "f32", access: "read_write" },
    ],
    workgroupSize: [ROW_WG],
    params: ATTN,
    body: `
  let row = ${linearId(ROW_WG)};
  if (row >= p_groups()) { return; }
  let H = p_H(); let T = p_T(); let DV = p_Dv();
  let i = row % T;
  let h = (row / T) % H;
  let b = row / (T * H);
  let gB = p_offsets(${SLOT.g}u) + b * p_strideB(${SLOT.g}u) + h * p_strideH(${SLOT.g}u) +
    i * p_strideT(${SLOT.g}u);
  let gD = p_strideD(${SLOT.g}u);
  var s = 0.0;
  let oB = ((b * T + i) * H + h) * DV;
  for (var d = 0u; d < DV; d++) { s += f32(gx[gB + d * gD]) * f32(ox[oB + d]); }
  dvec[row] = s;`,
  });
}

// ---- validation --------------------------------------------------------------------------

function checkArgs(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Dims {
  const op = "attention";
  const args = { q, k, v } as const;
  for (const [name, t] of Object.entries(args)) {
    if (!(t instanceof Tensor)) {
      throw new MoongradError(op, `${name} must be a Tensor, got ${typeof t}`);
    }
    t.storage(op);
    if (t.rank !== 4) {
      throw new MoongradError(
        op,
        `${name} must be 4-D [B, heads, seq, dim], got shape ${fmtShape(t.shape)}`,
      );
    }
    if (!isFloat(t.dtype)) {
      throw new MoongradError(
        op,
        `${name} has dtype ${t.dtype}; expected f32 or f16 (shape ${fmtShape(t.shape)})`,
      );
    }
    if (t.shape.some((d) => d === 0)) {
      throw new MoongradError(op, `${name} has an empty axis: shape ${fmtShape(t.shape)}`);
    }
  }
  const shapes = `q ${fmtShape(q.shape)}, k ${fmtShape(k.shape)}, v ${fmtShape(v.shape)}`;
  if (k.dtype !== q.dtype || v.dtype !== q.dtype) {
    throw new MoongradError(
      op,
      `q, k and v must share one dtype, got ${q.dtype}, ${k.dtype}, ${v.dtype} (${shapes})`,
    );
  }
  const [B, H, T, Dqk] = q.shape;
  const [Bk, Hk, S, Dk] = k.shape;
  const [Bv, Hv, Sv, Dv] = v.shape;
  if (Bk !== B || Bv !== B) {
    throw new MoongradError(op, `batch sizes differ: ${shapes} (expected the same B)`);
  }
  if (Dk !== Dqk) {
    throw new MoongradError(op, `k's head dim ${Dk} must equal q's ${Dqk}: ${shapes}`);
  }
  if (Sv !== S) {
    throw new MoongradError(op, `v's sequence length ${Sv} must equal k's ${S}: ${shapes}`);
  }
  for (const [name, n] of [["k", Hk], ["v", Hv]] as const) {
    if (H % n !== 0) {
      throw new MoongradError(
        op,
        `${name} has ${n} heads, which must divide q's ${H} heads (1 shares one head): ${shapes}`,
      );
    }
    if (opts.kvHeads !== undefined && n !== opts.kvHeads) {
      throw new MoongradError(
        op,
        `kvHeads is ${opts.kvHeads} but ${name} has ${n} heads: ${shapes}`,
      );
    }
  }
  const causal = opts.causal ?? true;
  if (typeof causal !== "boolean") {
    throw new MoongradError(op, `causal must be a boolean, got ${String(causal)}`);
  }
  if (causal && T > S) {
    throw new MoongradError(
      op,
      `causal attention needs T <= S (queries align to the end of the keys), got T ${T} > ` +
        `S ${S}: ${shapes}`,
    );
  }
  const scale = opts.scale ?? 1 / Math.sqrt(Dqk);
  if (typeof scale !== "number" || !Number.isFinite(scale)) {
    throw new MoongradError(op, `scale must be a finite number, got ${String(scale)}`);
  }
  return { B, H, T, S, Dqk, Dv, Hk, Hv, scale, causal, dtype: q.dtype };
}

// ---- launches ----------------------------------------------------------------------------

/** Number of vec4 chunks of a head dim. */
function chunks(dim: number): number {
  return Math.ceil(dim / 4);
}

/** Launches a direct kernel: one thread per row, `wg` threads per workgroup. */
function launchRows(
  k: Kernel,
  bufs: Tensor[],
  words: Uint32Array,
  rows: number,
  wg: number,
): void {
  dispatch(k, bufs.map((t) => t.storage(k.name).buf), words, grid1d(rows, wg));
}

function launch(
  k: Kernel,
  bufs: Tensor[],
  words: (groups: number) => Uint32Array,
  groups: number,
): void {
  const [gx, gy] = grid1d(groups, 1);
  dispatch(k, bufs.map((t) => t.storage(k.name).buf), words(groups), [gx, gy]);
}

/**
 * OUT_LAYOUT: the output [B, H, T, Dv] is a view of a contiguous [B, T, H, Dv] buffer (the
 * kernels store row (b, h, i) at ((b·T + i)·H + h)·Dv), so the usual next step, merging the
 * heads for the output projection (permute to [B, T, H, Dv], reshape to [B, T, H·Dv]), is a
 * view and not a copy (tiny K2: one copy dispatch per layer fewer).
 */
function headsInner(d: Dims): Tensor {
  const buf = Tensor.empty([d.B, d.T, d.H, d.Dv], d.dtype);
  const out = buf.view([d.B, d.H, d.T, d.Dv], [d.T * d.H * d.Dv, d.Dv, d.H * d.Dv, 1], buf.offset);
  buf.dispose();
  return out;
}

/** Whether k and v are views of one buffer (then bound once, see `kvKernel`). */
function sharesBuffer(k: Tensor, v: Tensor): boolean {
  return k.storage("attention").buf === v.storage("attention").buf;
}

function forward(q: Tensor, k: Tensor, v: Tensor, d: Dims) {
  const ty = wgslType(d.dtype);
  const kvShared = sharesBuffer(k, v);
  const vb = kvShared ? [] : [v];
  const cfg = currentConfig();
  const { rows: R, lanes: L } = cfg;
  const out = headsInner(d);
  const lse = Tensor.empty([d.B, d.H, d.T], "f32");
  const rmax = Tensor.empty([d.H, d.B * d.T], "f32");
  if (cfg.direct) {
    const rows = d.B * d.H * d.T;
    const vec = [q, k, v].every(aligned4);
    const kern = forwardDirect(ty, R, chunks(d.Dqk), chunks(d.Dv), vec, kvShared);
    launchRows(kern, [q, k, ...vb, out, lse, rmax], attnParams(d, 0, rows, { q, k, v }), rows, R);
  } else {
    const blocks = Math.ceil(d.T / R);
    launch(
      forwardKernel(ty, R, L, groupsFor(d.Dv, L), kvShared),
      [q, k, ...vb, out, lse, rmax],
      (g) => attnParams(d, blocks, g, { q, k, v }),
      blocks * d.B * d.H,
    );
  }
  const maxLogits = max(rmax, 1);
  rmax.dispose();
  return { out, lse, maxLogits };
}

/** Sums per-query-head gradients [B, H, S, D] over each group of heads sharing one kv head. */
function sumGroups(g: Tensor, kvHeads: number): Tensor {
  const [B, H, S, D] = g.shape;
  if (kvHeads === H) return g;
  const r = reshape(g, [B, kvHeads, H / kvHeads, S, D]);
  const out = sum(r, 2);
  r.dispose();
  g.dispose();
  return out;
}

/**
 * dq, dk, dv of `attention`; with `packed` (k and v are the two column windows of one kv
 * tensor, `attentionPacked`), dq and d(kv) [B, H, S, Dqk + Dv] instead: written side by side
 * by the key/value kernel when every query head has its own key and value head, else dk and
 * dv (summed over their head groups) concatenated.
 */
function backward(
  g: Tensor,
  needs: readonly boolean[],
  saved: readonly Tensor[],
  d: Dims,
  packed = false,
): (Tensor | null)[] {
  const [q, k, v, out, lse] = saved;
  const ty = wgslType(d.dtype);
  const kvShared = sharesBuffer(k, v);
  const vb = kvShared ? [] : [v];
  const ops = { q, k, v, g };
  const dvec = Tensor.empty([d.B, d.H, d.T], "f32");
  const rows = d.B * d.H * d.T;
  const rk = rowDotKernel(ty);
  dispatch(
    rk,
    [g.storage(rk.name).buf, out.storage(rk.name).buf, dvec.storage(rk.name).buf],
    attnParams(d, 0, rows, ops),
    grid1d(rows, ROW_WG),
  );
  const cfg = currentConfig();
  const { rows: R, lanes: L } = cfg;
  const nq = groupsFor(d.Dqk, L);
  const nv = groupsFor(d.Dv, L);
  const vec = [q, k, v, g].every(aligned4);
  let dq: Tensor | null = null;
  if (needs[0]) {
    dq = Tensor.empty([d.B, d.H, d.T, d.Dqk], d.dtype);
    const blocks = Math.ceil(d.T / R);
    if (cfg.direct) {
      const kern = dqDirect(ty, R, chunks(d.Dqk), chunks(d.Dv), vec, kvShared);
      launchRows(kern, [q, k, ...vb, g, lse, dvec, dq], attnParams(d, 0, rows, ops), rows, R);
    } else {
      launch(
        dqKernel(ty, R, L, nq, kvShared),
        [q, k, ...vb, g, lse, dvec, dq],
        (n) => attnParams(d, blocks, n, ops),
        blocks * d.B * d.H,
      );
    }
  }
  let dk: Tensor | null = null;
  let dv: Tensor | null = null;
  if (needs[1] || needs[2]) {
    // One output for both when the caller wants d(kv) and no head group needs a sum.
    const one = packed && d.Hk === d.H && d.Hv === d.H;
    const dkvH = one ? Tensor.empty([d.B, d.H, d.S, d.Dqk + d.Dv], d.dtype) : null;
    const dkH = dkvH ?? Tensor.empty([d.B, d.H, d.S, d.Dqk], d.dtype);
    const dvH = dkvH ? null : Tensor.empty([d.B, d.H, d.S, d.Dv], d.dtype);
    const outs = dvH ? [dkH, dvH] : [dkH];
    const blocks = Math.ceil(d.S / R);
    if (cfg.direct) {
      const kvRows = d.B * d.H * d.S;
      const kern = dkvDirect(ty, R, chunks(d.Dqk), chunks(d.Dv), vec, kvShared, one);
      launchRows(
        kern,
        [q, k, ...vb, g, lse, dvec, ...outs],
        attnParams(d, 0, kvRows, ops),
        kvRows,
        R,
      );
    } else {
      launch(
        dkvKernel(ty, R, L, nq, nv, kvShared, one),
        [q, k, ...vb, g, lse, dvec, ...outs],
        (n) => attnParams(d, blocks, n, ops),
        blocks * d.B * d.H,
      );
    }
    if (one) dk = dkvH;
    else if (packed) {
      const [gk, gv] = [sumGroups(dkH, d.Hk), sumGroups(dvH!, d.Hv)];
      dk = concat([gk, gv], 3);
      gk.dispose();
      gv.dispose();
    } else {
      if (needs[1]) dk = sumGroups(dkH, d.Hk);
      else dkH.dispose();
      if (needs[2]) dv = sumGroups(dvH!, d.Hv);
      else dvH!.dispose();
    }
  }
  dvec.dispose();
  return packed ? [dq, dk] : [dq, dk, dv];
}

/**
 * Fused scaled-dot-product attention, causal by default, with the per-head max logit.
 *
 * q [B, H, T, Dqk], k [B, Hk, S, Dqk], v [B, Hv, S, Dv] where Hk and Hv divide H (1: one key
 * or value head shared by every query head; query head h uses kv head ⌊h / (H / Hk)⌋).
 * Returns `out` [B, H, T, Dv] = softmax(q kᵀ · scale, masked) v, differentiable w.r.t. q, k
 * and v, and `maxLogits` f32 [H] (no gradient). With `causal`, query i attends keys
 * j ≤ i + (S − T) and T > S is rejected. Any input layout is read without a copy.
 * Special values follow PyTorch's softmax: a query row with a NaN or +Inf attended logit (or
 * only −Inf ones) gives a NaN output row and NaN gradients, and a NaN logit makes its head's
 * max logit NaN (each logit costs one bit test; `max` alone may drop NaN).
 *
 * @example Causal self-attention with shared key/value heads, and its gradient
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.randn([1, 8, 32, 16], { seed: 0, requiresGrad: true }); // B, H, T, D
 * const k = mg.randn([1, 2, 32, 16], { seed: 1, requiresGrad: true }); // 2 kv heads
 * const v = mg.randn([1, 2, 32, 16], { seed: 2, requiresGrad: true });
 * const { out, maxLogits } = mg.attention(q, k, v); // causal, scale 16^-0.5
 * out.square().mean().backward();
 * console.log(out.shape, k.grad!.shape, (await maxLogits.data()).length); // [1, 8, 32, 16] [1, 2, 32, 16] 8
 * ```
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions = {},
): AttentionResult {
  const d = checkArgs(q, k, v, options);
  const { out, lse, maxLogits } = forward(q, k, v, d);
  record(out, "attention", [q, k, v], (g, needs, saved) => backward(g, needs, saved, d), [
    q,
    k,
    v,
    out,
    lse,
  ]);
  lse.dispose();
  return { out, maxLogits };
}

/**
 * `attention` with keys and values packed in one tensor: kv [B, Hk, S, Dqk + Dv] holds k in
 * its first `dqk` columns and v in the rest (MLA's [k_nope | k_rope | v], ops/rope_mla.ts).
 * The result is `attention(q, kv[..., :dqk], kv[..., dqk:], options)` exactly; the gradient
 * of kv arrives as one tensor, written by the key/value kernel in one launch when every query
 * head has its own key/value head (no slice gradients to zero-fill and sum).
 *
 * @example Keys and values in one projection's output
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const q = mg.randn([1, 2, 8, 8], { seed: 0, requiresGrad: true });
 * const kv = mg.randn([1, 2, 8, 12], { seed: 1, requiresGrad: true }); // k: 8, v: 4 columns
 * const { out } = mg.attentionPacked(q, kv, 8);
 * out.sum().backward();
 * console.log(out.shape, kv.grad!.shape); // [1, 2, 8, 4] [1, 2, 8, 12]
 * ```
 */
export function attentionPacked(
  q: Tensor,
  kv: Tensor,
  dqk: number,
  options: AttentionOptions = {},
): AttentionResult {
  if (!(kv instanceof Tensor) || kv.rank !== 4) {
    throw new MoongradError(
      "attentionPacked",
      `kv must be a 4-D Tensor [B, heads, seq, dqk + dv], got ${
        kv instanceof Tensor ? fmtShape(kv.shape) : typeof kv
      }`,
    );
  }
  const w = kv.shape[3];
  if (!Number.isInteger(dqk) || dqk < 1 || dqk >= w) {
    throw new MoongradError(
      "attentionPacked",
      `dqk must be an integer in 1..${w - 1} (kv ${fmtShape(kv.shape)}), got ${dqk}`,
    );
  }
  const [B, Hk, S] = kv.shape;
  const k = kv.view([B, Hk, S, dqk], kv.strides, kv.offset);
  const v = kv.view([B, Hk, S, w - dqk], kv.strides, kv.offset + dqk * kv.strides[3]);
  try {
    const d = checkArgs(q, k, v, options);
    const { out, lse, maxLogits } = forward(q, k, v, d);
    record(
      out,
      "attention",
      [q, kv],
      (g, needs, saved) => backward(g, [needs[0], needs[1], needs[1]], saved, d, true),
      [q, k, v, out, lse],
    );
    lse.dispose();
    return { out, maxLogits };
  } finally {
    k.dispose();
    v.dispose();
  }
}
