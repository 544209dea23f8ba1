/**
 * Fused RMSNorm over the last axis: y = x · rsqrt(mean(x²) + eps) · g, with its fused
 * backward. Forward: 8 adjacent invocations share a row (8 rows per workgroup), sum x² over
 * the row in vec4 loads when the layout allows, reduce in workgroup memory, write y and save the
 * row's rsqrt for backward (13–15 ms against 47–67 ms before on lavapipe, 1024² f32); on CPU
 * adapters, from 64 rows, one invocation owns a row and needs no barrier (see `forward`).
 * Backward: a workgroup per row (one thread per row when rows are short, and on CPU adapters
 * from 64 rows: see `rowKernel`) computes dx = r·g·dy − x·r³/n·Σ(dy·g·x), and workgroups of
 * the same dispatch after the row ones sum dg = Σ_rows dy·x·r column by column (a thread per
 * column; dg does not need dx): one dispatch per norm (tiny-K2 step: 17 norms, 51 → 34 → 17
 * backward dispatches). Above FUSED_DG_ROWS rows (or when only one of dx, dg is needed) dg
 * comes from a column kernel over row chunks plus a short column sum instead, so no column
 * sum loops over more than 512 partials. Inputs are read through a row stride and a column
 * stride (a slice of a wider projection is not copied); f16 is computed in f32. When rows are
 * unit-stride and everything is aligned to 4, the backward reads and writes four columns at a
 * time (dg's per-column sums keep their row order; dx's row sum adds each group of four
 * first): llvmpipe runs every storage access lane by lane, and the tiny-K2 AdamW step took 211
 * against 222 ms (median of 20 steps each, interleaved in one process, lavapipe).
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { numel } from "../core/shape.ts";
import { deviceInfo } from "../core/device.ts";
import { CPU_THREAD_WG, cpuRowThreads } from "./cpu_rows.ts";
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { grid1d, linearId } from "./grid.ts";
import { contiguous } from "./elementwise.ts";
import { fillInPlace } from "./copy.ts";
import { usablePrior } from "./grad_prior.ts";

/** Threads per workgroup of the workgroup-per-row kernels. */
const ROW_WG = 128;
/** Lanes per row of the workgroup-per-row kernels on CPU adapters, below CPU_THREAD_ROWS rows. */
const CPU_ROW_LANES = 8;
let rowLanesOverride: number | null = null;

/**
 * Overrides the lanes per row of the backward row kernels (tests run the CPU and the GPU
 * choices on one adapter; 1 is one thread per row); null restores the adapter's default.
 * Returns the previous override. Not part of the public API (not exported by mod.ts).
 */
export function setRmsNormRowLanes(lanes: number | null): number | null {
  if (lanes !== null && (![1, 2, 4, 8, 16, 32, 64, 128].includes(lanes))) {
    throw new MoongradError(
      "setRmsNormRowLanes",
      `lanes must be a power of two 1..128, got ${lanes}`,
    );
  }
  const previous = rowLanesOverride;
  rowLanesOverride = lanes;
  return previous;
}

/** Rows at most this long get one thread each instead of one workgroup. */
const SHORT_ROW = 32;
/** Threads per workgroup of the column kernels of dg. */
const COL_WG = 64;
/**
 * Up to this many rows, backward computes dg from per-element shares written by the dx pass
 * (2 dispatches: dx + shares, then a column sum over the rows); above it, from row-chunk
 * partials (3 dispatches), so that the column sum never loops over more than 512 chunks.
 */
const FUSED_DG_ROWS = 2048;

/** A tensor read as rows of its last axis: element (row, j) at offset + row·rs + j·cs. */
interface Rows {
  t: Tensor;
  rowStride: number;
  colStride: number;
  /** True when `t` is a copy made here (dispose it after use). */
  owned: boolean;
}

/** Views x as rows with one row stride; copies only when its outer axes cannot be merged. */
function asRows(x: Tensor): Rows {
  const r = x.rank;
  const n = x.shape[r - 1];
  let rowStride = -1;
  let span = 1;
  for (let i = r - 2; i >= 0; i--) {
    if (x.shape[i] === 1) continue;
    if (rowStride < 0) {
      rowStride = x.strides[i];
      span = x.shape[i];
    } else if (x.strides[i] === rowStride * span) {
      span *= x.shape[i];
    } else {
      const c = contiguous(x);
      return { t: c, rowStride: n, colStride: 1, owned: true };
    }
  }
  return {
    t: x,
    rowStride: rowStride < 0 ? n : rowStride,
    colStride: x.strides[r - 1],
    owned: false,
  };
}

/**
 * Parameters of the row kernels: rows, row length, eps (forward), rows per chunk (dg
 * partials), the offset of the prior gradient dx accumulates onto (backward), a word that is
 * always 0 (an optimisation barrier, see `backwardX`), and per operand
 * (up to 3) its offset, row stride and column stride.
 */
const RMS = params("rms_norm", {
  rows: "u32",
  n: "u32",
  eps: "f32",
  perChunk: "u32",
  priorOffset: "u32",
  zero: "u32",
  offsets: ["u32", 3],
  rowStrides: ["u32", 3],
  colStrides: ["u32", 3],
});

function packRows(
  rows: number,
  n: number,
  eps: number,
  perChunk: number,
  ...ops: Rows[]
): Uint32Array {
  return packRowsWith(0, rows, n, eps, perChunk, ...ops);
}

function packRowsWith(
  priorOffset: number,
  rows: number,
  n: number,
  eps: number,
  perChunk: number,
  ...ops: Rows[]
): Uint32Array {
  return RMS.pack({
    rows,
    n,
    eps,
    perChunk,
    priorOffset,
    zero: 0,
    offsets: ops.map((o) => o.t.offset),
    rowStrides: ops.map((o) => o.rowStride),
    colStrides: ops.map((o) => o.colStride),
  });
}

/** Parameters of the column sum of the dg partials: columns and chunks. */
const DG_SUM = params("rms_norm_dg_sum", { n: "u32", chunks: "u32" });

/** WGSL: `at(t, row, j)` addresses operand t; `wsum` sums over the row's lanes. */
function prelude(lanes: number): string {
  const at = `
fn at(t: u32, row: u32, j: u32) -> u32 {
  return p_offsets(t) + row * p_rowStrides(t) + j * p_colStrides(t);
}`;
  if (lanes === 1) return at + "\nfn wsum(v: f32, lane: u32) -> f32 { return v; }";
  return at + `
var<workgroup> red: array<f32, ${lanes}>;
fn wsum(v: f32, lane: u32) -> f32 {
  red[lane] = v;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { red[lane] = red[lane] + red[lane + s]; }
    workgroupBarrier();
  }
  let out = red[0];
  workgroupBarrier();
  return out;
}`;
}

/** WGSL defining row, lane, step and n, returning past the last row (`wg`: workgroup size). */
function setup(lanes: number, wg: number): string {
  return lanes === 1
    ? `
  let row = ${linearId(wg)};
  if (row >= p_rows()) { return; }
  let lane = 0u;
  let step = 1u;
  let n = p_n();`
    : `
  let row = wid.y * nwg.x + wid.x;
  if (row >= p_rows()) { return; }
  let lane = lidx;
  let step = ${lanes}u;
  let n = p_n();`;
}

function rowKernel(
  name: string,
  bindings: Binding[],
  n: number,
  rows: number,
  body: string,
  head: (wg: number) => string = () => "",
) {
  // CPU adapters: one thread per row from CPU_THREAD_ROWS rows, in CPU_THREAD_WG-thread
  // workgroups (ops/cpu_rows.ts: no reduction, no barrier; 8 forward + backward per wait, [256, 128] 18.3–19.4 → 17.1–17.9 ms, [1024, 1024] 150.9 →
  // 114.6 ms, lavapipe 2026-12-03), else 8 lanes per row (one SIMD8 group on llvmpipe, so the
  // barriers switch no coroutines; [256, 128] against 128 lanes: 2.75–3.09 → 1.59–1.75 ms).
  const cpu = deviceInfo().isFallbackAdapter;
  // A norm's rows are hidden sizes: no bound on their length (RMSNorm's forward likewise).
  const wide = rowLanesOverride ??
    (cpu ? (cpuRowThreads(rows, n, Infinity) ? 1 : CPU_ROW_LANES) : ROW_WG);
  const lanes = n <= SHORT_ROW ? 1 : wide;
  const wg = lanes === 1 ? (cpu ? CPU_THREAD_WG : ROW_WG) : lanes;
  const k = kernel({
    name: `${name}_${lanes === 1 ? "thread" : "rows"}`,
    bindings,
    workgroupSize: [wg],
    params: RMS,
    pairable: true,
    prelude: prelude(lanes),
    body: head(wg) + setup(lanes, wg) + body,
  });
  /** Workgroups of the row job: one per row, or one per `wg` rows (a thread each). */
  const rowGroups = (rows: number) => (lanes === 1 ? Math.ceil(rows / wg) : rows);
  return { k, grid: (rows: number) => grid1d(rows, lanes === 1 ? wg : 1), wg, rowGroups };
}

function check(x: Tensor, weight: Tensor, eps: number): void {
  const op = "rmsNorm";
  for (const [arg, t] of [["x", x], ["weight", weight]] as const) {
    if (!(t instanceof Tensor)) throw new MoongradError(op, `${arg} must be a Tensor`);
    t.storage(op);
    if (!isFloat(t.dtype)) {
      throw new MoongradError(op, `${arg} must be f32 or f16, got ${t.dtype} ${fmtShape(t.shape)}`);
    }
  }
  if (x.rank < 1 || weight.rank !== 1 || weight.shape[0] !== x.shape[x.rank - 1]) {
    throw new MoongradError(
      op,
      `x [..., D] needs weight [D]; got x ${fmtShape(x.shape)} and weight ${
        fmtShape(weight.shape)
      }`,
    );
  }
  if (x.dtype !== weight.dtype) {
    throw new MoongradError(op, `x is ${x.dtype} but weight is ${weight.dtype}; cast one first`);
  }
  if (typeof eps !== "number" || !Number.isFinite(eps) || eps < 0) {
    throw new MoongradError(op, `eps must be a finite number >= 0, got ${eps}`);
  }
}

function gainRows(weight: Tensor): Rows {
  return { t: weight, rowStride: 0, colStride: weight.strides[0], owned: false };
}

/** Lanes that share one row in the forward kernel (a SIMD width of llvmpipe's AVX2 code). */
const FWD_LANES = 8;
/** Rows per workgroup of the forward kernel. */
const FWD_ROWS = 8;

/**
 * WGSL of the forward kernel's row sum: FWD_LANES adjacent invocations share a row and reduce
 * their partial sums in workgroup memory (3 barrier steps; a workgroup holds FWD_ROWS rows).
 */
/** WGSL of `at`: the element offset of operand t's (row, j) through its strides. */
const FWD_PRELUDE_AT = `
fn at(t: u32, row: u32, j: u32) -> u32 {
  return p_offsets(t) + row * p_rowStrides(t) + j * p_colStrides(t);
}`;

const FWD_PRELUDE = `
var<workgroup> fwd_red: array<f32, ${FWD_LANES * FWD_ROWS}>;
fn row_sum(v: f32, lane: u32, slot: u32) -> f32 {
  let at0 = slot * ${FWD_LANES}u;
  fwd_red[at0 + lane] = v;
  workgroupBarrier();
  for (var s = ${FWD_LANES / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { fwd_red[at0 + lane] = fwd_red[at0 + lane] + fwd_red[at0 + lane + s]; }
    workgroupBarrier();
  }
  return fwd_red[at0];
}${FWD_PRELUDE_AT}`;

/**
 * True when x rows and the gain can be read as vec4: unit column strides, row length, row
 * stride and both offsets multiples of 4.
 */
function vec4Rows(xr: Rows, g: Rows, n: number): boolean {
  return n % 4 === 0 && xr.colStride === 1 && xr.rowStride % 4 === 0 && xr.t.offset % 4 === 0 &&
    g.colStride === 1 && g.t.offset % 4 === 0;
}

/**
 * The forward kernel's layouts: "lanes" (FWD_LANES invocations share a row, FWD_ROWS rows per
 * workgroup, the row sum in workgroup memory) or "thread" (one invocation per row, FWD_LANES ·
 * FWD_ROWS rows per workgroup, no workgroup memory, no barrier).
 */
export type RmsNormForwardLayout = "lanes" | "thread";

let forwardOverride: RmsNormForwardLayout | null = null;

/**
 * Overrides the forward kernel's layout (tests run both on one adapter); null restores the
 * default ("thread" on CPU adapters from CPU_THREAD_ROWS rows, else "lanes"). Returns the
 * previous override. Not part of the public API (not exported by mod.ts).
 */
export function setRmsNormForwardLayout(
  layout: RmsNormForwardLayout | null,
): RmsNormForwardLayout | null {
  const previous = forwardOverride;
  forwardOverride = layout;
  return previous;
}

/**
 * Forward. "lanes": FWD_LANES invocations per row, FWD_ROWS rows per workgroup. Each lane sums
 * x² over the row's elements lane, lane + FWD_LANES, ... (vec4 when the layout allows: adjacent
 * lanes read adjacent 16-byte words), the lanes reduce in workgroup memory, and each lane writes
 * its elements of y. Rows past the end are clamped (every invocation reaches the barriers) and
 * write nothing. Measured on lavapipe (2 cores, 1024×1024 f32, wait included): 13–15 ms per
 * call against 47–67 ms for the previous workgroup-per-row kernel (128 lanes, 7 barrier steps,
 * scalar strided loads); the wait alone is ~10.5 ms there. "thread": each invocation sums its
 * row's x² in order and writes the row. On a GPU that would read x with a row's stride
 * between adjacent threads; on a CPU adapter the SIMD lanes are adjacent invocations anyway,
 * each storage access is a per-lane loop either way (ops/matmul_texture.ts), and what the
 * "thread" layout saves is the barriers, which llvmpipe runs as coroutine switches: raw
 * kernels at 1024² f32, 20 per wait, 1.45–1.51 → 1.15–1.23 ms per call (lavapipe,
 * 2026-12-03).
 */
function forward(xr: Rows, weight: Tensor, eps: number, shape: readonly number[]) {
  const x = xr.t;
  const n = shape[shape.length - 1];
  const rows = numel(shape.slice(0, -1));
  const y = Tensor.empty(shape, x.dtype);
  const rstd = Tensor.empty(shape.slice(0, -1), "f32");
  if (y.size === 0) return { y, rstd };
  const t = wgslType(x.dtype);
  const gr = gainRows(weight);
  const v4 = vec4Rows(xr, gr, n);
  const vt = v4 ? `vec4<${t}>` : t;
  const load = (b: string, k: number, j: string) =>
    v4 ? `vec4<f32>(${b}[p_offsets(${k}u) / 4u + ${j}])` : `f32(${b}[at(${k}u, row, ${j})])`;
  const xrow = v4 ? `row * (p_rowStrides(0u) / 4u) + ` : "";
  const loadX = (j: string) =>
    v4 ? `vec4<f32>(x[p_offsets(0u) / 4u + ${xrow}${j}])` : load("x", 0, j);
  const thread = (forwardOverride ??
    (cpuRowThreads(rows, n, Infinity) ? "thread" : "lanes")) ===
    "thread";
  // The layouts differ in who owns a row and how its sum is formed; the rest is shared.
  const [first, step] = thread ? ["0u", "1u"] : ["lane", `${FWD_LANES}u`];
  const k = kernel({
    name: thread
      ? (v4 ? "rms_norm_vec4_thread" : "rms_norm_thread")
      : (v4 ? "rms_norm_vec4" : "rms_norm_lanes"),
    bindings: [
      { name: "x", type: vt, access: "read" },
      { name: "g", type: vt, access: "read" },
      { name: "y", type: vt, access: "read_write" },
      { name: "rstd", type: "f32", access: "read_write" },
    ],
    workgroupSize: [FWD_LANES * FWD_ROWS],
    params: RMS,
    pairable: true,
    prelude: thread ? FWD_PRELUDE_AT : FWD_PRELUDE,
    body: `${
      thread
        ? `
  let row = (wid.y * nwg.x + wid.x) * ${FWD_LANES * FWD_ROWS}u + lidx;
  if (row >= p_rows()) { return; }`
        : `
  let slot = lidx / ${FWD_LANES}u;
  let lane = lidx % ${FWD_LANES}u;
  let row0 = (wid.y * nwg.x + wid.x) * ${FWD_ROWS}u + slot;
  let row = min(row0, p_rows() - 1u);`
    }
  let n = p_n();
  let m = ${v4 ? "n / 4u" : "n"};
  var acc = 0.0;
  for (var j = ${first}; j < m; j += ${step}) {
    let v = ${loadX("j")};
    acc += ${v4 ? "dot(v, v)" : "v * v"};
  }${
      thread
        ? `
  let r = inverseSqrt(acc / f32(n) + p_eps());
  rstd[row] = r;`
        : `
  let r = inverseSqrt(row_sum(acc, lane, slot) / f32(n) + p_eps());
  if (row0 >= p_rows()) { return; }
  if (lane == 0u) { rstd[row] = r; }`
    }
  for (var j = ${first}; j < m; j += ${step}) {
    y[row * m + j] = ${vt}(${loadX("j")} * r * ${load("g", 1, "j")});
  }`,
  });
  const words = packRows(rows, n, eps, 0, xr, gr);
  const op = "rmsNorm";
  dispatch(
    k,
    [x.storage(op).buf, weight.storage(op).buf, y.storage(op).buf, rstd.storage(op).buf],
    words,
    grid1d(rows, thread ? FWD_LANES * FWD_ROWS : FWD_ROWS),
  );
  return { y, rstd };
}

/**
 * dx = r·g·dy − x·r³/n·Σ_j(dy·g·x), one workgroup (or thread) per row. With `withDg` (of dtype
 * `withDg`), the same dispatch also computes dg = Σ_rows dy·x·r in workgroups of its own after
 * the row workgroups (dg does not depend on dx: one thread per column sums the rows in order,
 * each product rounded to f32 before it is added, as the former per-element shares and their
 * column sum did: bit-identical, and one dispatch instead of two). With
 * `prior` (contiguous, shaped and typed like x: the gradient x accumulated from its other
 * uses in this backward pass), dx is prior + the above, summed in f32 and rounded once as
 * `add(prior, dx)` would (the residual stream's gradient: one dispatch fewer per norm).
 */
function backwardX(
  dyr: Rows,
  xr: Rows,
  weight: Tensor,
  rstd: Tensor,
  withDg: DType | null = null,
  prior: Tensor | null = null,
): { dx: Tensor; dg: Tensor | null } {
  const x = xr.t;
  const n = x.shape[x.rank - 1];
  const rows = rstd.size;
  const dx = Tensor.empty(x.shape, x.dtype);
  const dg = withDg ? Tensor.empty([n], withDg) : null;
  if (dx.size === 0) return { dx, dg };
  const t = wgslType(x.dtype);
  // vec4 rows: dy, x and g read (dx, dg and the prior written / read) four columns at a time.
  const v4 = vec4Rows(xr, gainRows(weight), n) && vec4Rows(dyr, gainRows(weight), n) &&
    (prior?.offset ?? 0) % 4 === 0;
  const vt = (type: string) => (v4 ? `vec4<${type}>` : type);
  const f = v4 ? "vec4<f32>" : "f32";
  const u = v4 ? "vec4<u32>" : "u32";
  const bindings: Binding[] = [
    { name: "dy", type: vt(wgslType(dyr.t.dtype)), access: "read" },
    { name: "x", type: vt(t), access: "read" },
    { name: "g", type: vt(t), access: "read" },
    { name: "rstd", type: "f32", access: "read" },
    { name: "dx", type: vt(t), access: "read_write" },
  ];
  if (dg) bindings.push({ name: "dg", type: vt(wgslType(dg.dtype)), access: "read_write" });
  if (prior) bindings.push({ name: "prior", type: vt(t), access: "read" });
  // Element (row, j) of operand k; with vec4, j counts groups of four columns.
  const at = (k: number, row: string, j: string) =>
    v4
      ? `(p_offsets(${k}u) + ${row} * p_rowStrides(${k}u)) / 4u + ${j}`
      : `at(${k}u, ${row}, ${j})`;
  const width = v4 ? 4 : 1;
  // The dg job: workgroups from p_perChunk() (the row job's count) on, a thread per column
  // (per four columns with vec4: the same sum per column, in the same row order).
  const dgJob = (wg: number) =>
    !dg ? "" : `
  let wgi = wid.y * nwg.x + wid.x;
  if (wgi >= p_perChunk()) {
    let j = (wgi - p_perChunk()) * ${wg}u + lidx;
    if (j < p_n() / ${width}u) {
      var acc = ${f}(0.0);
      for (var r = 0u; r < p_rows(); r++) {
        let share = ${f}(dy[${at(0, "r", "j")}]) * ${f}(x[${at(1, "r", "j")}]) * rstd[r];
        acc += bitcast<${f}>(bitcast<${u}>(share) | ${u}(p_zero()));
      }
      dg[j] = ${vt(wgslType(dg.dtype))}(acc);
    }
    return;
  }`;
  const dxv = `r * ${f}(g[${at(2, "row", "j")}]) * d - xv * c`;
  // With a prior, dx's own value passes through an integer OR with a runtime zero before the
  // add: shader compilers may otherwise reassociate prior + (a·b − c) (Mesa's inexact
  // fadd/ffma rules did: 1–2 ulp off `add(prior, dx)`); through the integer it stays exact.
  const own = `bitcast<${f}>(bitcast<${u}>(${f}(${vt(t)}(${dxv}))) | ${u}(p_zero()))`;
  const dxAt = v4 ? "row * (n / 4u) + j" : "row * n + j";
  const dxOut = !prior
    ? `${vt(t)}(${dxv})`
    : `${vt(t)}(${f}(prior[p_priorOffset()${v4 ? " / 4u" : ""} + ${dxAt}]) + ${own})`;
  const m = v4 ? "n / 4u" : "n";
  const term = v4
    ? "let pr = dv * gv * xq;\n    acc += (pr.x + pr.y) + (pr.z + pr.w);"
    : "acc += dv * gv * xq;";
  const { k, grid, wg, rowGroups } = rowKernel(
    `${dg ? "rms_norm_dx_dg" : "rms_norm_dx"}${v4 ? "_vec4" : ""}`,
    bindings,
    n,
    rows,
    `
  let r = rstd[row];
  var acc = 0.0;
  for (var j = lane; j < ${m}; j += step) {
    let dv = ${f}(dy[${at(0, "row", "j")}]);
    let gv = ${f}(g[${at(2, "row", "j")}]);
    let xq = ${f}(x[${at(1, "row", "j")}]);
    ${term}
  }
  let c = r * r * r * wsum(acc, lane) / f32(n);
  for (var j = lane; j < ${m}; j += step) {
    let d = ${f}(dy[${at(0, "row", "j")}]);
    let xv = ${f}(x[${at(1, "row", "j")}]);
    dx[${dxAt}] = ${dxOut};
  }`,
    dgJob,
  );
  const jobs = rowGroups(rows);
  const words = packRowsWith(prior?.offset ?? 0, rows, n, 0, jobs, dyr, xr, gainRows(weight));
  const op = "rmsNorm_grad";
  const bufs = [
    dyr.t.storage(op).buf,
    x.storage(op).buf,
    weight.storage(op).buf,
    rstd.storage(op).buf,
    dx.storage(op).buf,
  ];
  if (dg) bufs.push(dg.storage(op).buf);
  if (prior) bufs.push(prior.storage(op).buf);
  dispatch(k, bufs, words, dg ? grid1d(jobs + Math.ceil(n / width / wg), 1) : grid(rows));
  return { dx, dg };
}

/** dg = Σ_rows dy·x·r: partial sums over row chunks (one thread per column), then a column sum. */
function backwardG(dyr: Rows, xr: Rows, rstd: Tensor, gDtype: DType): Tensor {
  const x = xr.t;
  const n = x.shape[x.rank - 1];
  const rows = rstd.size;
  const op = "rmsNorm_grad";
  if (rows === 0) {
    const z = Tensor.empty([n], gDtype);
    fillInPlace(z, 0);
    return z;
  }
  const perChunk = Math.max(32, Math.ceil(rows / 512));
  const chunks = Math.ceil(rows / perChunk);
  const partial = Tensor.empty([chunks, n], "f32");
  const k = kernel({
    name: "rms_norm_dg_partial",
    bindings: [
      { name: "dy", type: wgslType(dyr.t.dtype), access: "read" },
      { name: "x", type: wgslType(x.dtype), access: "read" },
      { name: "rstd", type: "f32", access: "read" },
      { name: "part", type: "f32", access: "read_write" },
    ],
    workgroupSize: [COL_WG],
    params: RMS,
    pairable: true,
    prelude: prelude(1),
    body: `
  let j = wid.x * ${COL_WG}u + lid.x;
  let n = p_n();
  if (j >= n) { return; }
  let r0 = wid.y * p_perChunk();
  let r1 = min(p_rows(), r0 + p_perChunk());
  var acc = 0.0;
  for (var r = r0; r < r1; r++) {
    acc += f32(dy[at(0u, r, j)]) * f32(x[at(1u, r, j)]) * rstd[r];
  }
  part[wid.y * n + j] = acc;`,
  });
  const words = packRows(rows, n, 0, perChunk, dyr, xr);
  dispatch(
    k,
    [dyr.t.storage(op).buf, x.storage(op).buf, rstd.storage(op).buf, partial.storage(op).buf],
    words,
    [Math.ceil(n / COL_WG), chunks],
  );
  if (chunks === 1 && gDtype === "f32") {
    const dg = partial.view([n], [1], 0);
    partial.dispose();
    return dg;
  }
  const dg = sumDgParts(partial, gDtype);
  partial.dispose();
  return dg;
}

/** dg [n] = Σ over the rows of `part` [chunks, n] (one thread per column), in `gDtype`. */
function sumDgParts(part: Tensor, gDtype: DType): Tensor {
  const [chunks, n] = part.shape;
  const dg = Tensor.empty([n], gDtype);
  if (n === 0) return dg;
  const t = wgslType(gDtype);
  const ks = kernel({
    name: "rms_norm_dg_sum",
    bindings: [
      { name: "part", type: "f32", access: "read" },
      { name: "dg", type: t, access: "read_write" },
    ],
    workgroupSize: [COL_WG],
    params: DG_SUM,
    body: `
  let j = ${linearId(COL_WG)};
  let n = p_n();
  if (j >= n) { return; }
  var acc = 0.0;
  for (var c = 0u; c < p_chunks(); c++) { acc += part[c * n + j]; }
  dg[j] = ${t}(acc);`,
  });
  const op = "rmsNorm_grad";
  dispatch(
    ks,
    [part.storage(op).buf, dg.storage(op).buf],
    DG_SUM.pack({ n, chunks }),
    grid1d(n, COL_WG),
  );
  return dg;
}

/**
 * Root-mean-square normalisation over the last axis (HF `DeepseekV3RMSNorm`):
 * `y = x · rsqrt(mean(x²) + eps) · weight`, x [..., D] and weight [D], f32 or f16 (computed
 * in f32). One fused kernel forward, fused kernels backward (dx, and dweight summed over rows).
 *
 * @example Normalise the last axis
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.randn([2, 8, 64], { seed: 0 });
 * const w = mg.ones([64]);
 * const y = mg.nn.rmsNorm(x, w, 1e-6); // x / √(mean(x²) + eps) · w over the last axis
 * console.log(y.shape); // [2, 8, 64]
 * ```
 */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-6): Tensor {
  check(x, weight, eps);
  const xr = asRows(x);
  const { y, rstd } = forward(xr, weight, eps, x.shape);
  // Save the row view actually read (a copy when x's axes did not merge).
  record(y, "rmsNorm", [x, weight], (g, needs, [sx, sw, sr], priors) => {
    const xs: Rows = { t: sx, rowStride: xr.rowStride, colStride: xr.colStride, owned: false };
    const gr = asRows(g);
    const prior = needs[0] && sr.size > 0
      ? usablePrior(priors, 0, x.shape, x.dtype, gr.t, sx, sw, sr)
      : null;
    let out: (Tensor | null)[];
    if (needs[0] && needs[1] && sr.size > 0 && sr.size <= FUSED_DG_ROWS) {
      const { dx, dg } = backwardX(gr, xs, sw, sr, sw.dtype, prior);
      out = [dx, dg];
    } else {
      out = [
        needs[0] ? backwardX(gr, xs, sw, sr, null, prior).dx : null,
        needs[1] ? backwardG(gr, xs, sr, sw.dtype) : null,
      ];
    }
    if (prior) priors!.absorb(0);
    if (gr.owned) gr.t.dispose();
    return out;
  }, [xr.t, weight, rstd]);
  rstd.dispose();
  if (xr.owned) xr.t.dispose();
  return y;
}
