/**
 * Multi-tensor AdamW (PyTorch's fused / _foreach AdamW, within WebGPU's rules): one launch
 * updates up to 4 parameters. WebGPU binds one buffer per binding and every tensor is a
 * sub-buffer of a pool slab, so each parameter brings its four tensors (p, g, m, v) as
 * bindings of their own — 16 storage bindings for 4 parameters, fewer per launch where the
 * device allows fewer storage buffers per stage (Dawn/SwiftShader: 12, so 2) — and its
 * offsets, gradient view and bias corrections as array parameters (12 words each; 4 fit the
 * 63-word block). A thread finds its parameter by a scan over at most 4 start indices and
 * reads it through a switch over the bindings. Launches hold either contiguous gradients
 * (read at `offset + i`) or strided ones (the transposed weight gradients of linear layers,
 * read through a rank-3 view: two integer divisions per element), never both.
 *
 * The arithmetic per element is ops/optim_update.ts's adamwUpdate, term for term (bit-identical
 * results). Tiny K2: AdamW-only step 63 → 16 launches, MuonClip's AdamW half 19 → 6.
 *
 * Cost on a CPU adapter: llvmpipe runs the per-element switch over bindings with masked loads
 * and stores in every case, so the AdamW phase of a tiny-K2 step went from 29–35 ms (one
 * parameter per launch, strided gradients read in place) to 37–45 ms (process CPU time 30 →
 * 40–50 ms; interleaved runs, load ~3 on 2 cores); a workgroup-uniform parameter index
 * (tried) did not help. On a GPU the 47 saved launches (~12 µs each on an H100) are worth far
 * more than the switch, which is uniform within a workgroup except at parameter boundaries.
 */
import { gpuDevice } from "../core/device.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";
import { gradView3 } from "./optim_update.ts";

const WG = 256;
/** Most parameters per launch (4 × 12 words + 5 fit the 63-word block). */
const MOST = 4;

/** Threads, β₁, β₂, 1 − lr·wd, ε; per parameter its start, offsets, gradient view, lr/bc₁, √bc₂. */
const ADAMW_MULTI = params("adamw_multi", {
  n: "u32",
  beta1: "f32",
  beta2: "f32",
  decay: "f32",
  eps: "f32",
  start: ["u32", MOST],
  pOffset: ["u32", MOST],
  gOffset: ["u32", MOST],
  gD1: ["u32", MOST],
  gD2: ["u32", MOST],
  gS0: ["u32", MOST],
  gS1: ["u32", MOST],
  gS2: ["u32", MOST],
  mOffset: ["u32", MOST],
  vOffset: ["u32", MOST],
  stepSize: ["f32", MOST],
  bc2Sqrt: ["f32", MOST],
});

/** One parameter of a multi-tensor AdamW launch. */
export interface AdamWItem {
  /** The parameter (contiguous f32), updated in place. */
  param: Tensor;
  /** Its gradient: contiguous, or a view of rank ≤ 3 with non-negative strides. */
  grad: Tensor;
  /** exp_avg (contiguous f32, the parameter's size), updated in place. */
  expAvg: Tensor;
  /** exp_avg_sq (contiguous f32), updated in place. */
  expAvgSq: Tensor;
  /** 1 − β₁^t for this parameter's step t. */
  biasCorrection1: number;
  /** 1 − β₂^t for this parameter's step t. */
  biasCorrection2: number;
}

/** What the parameters of one launch share: one optimizer group's hyper-parameters. */
export interface AdamWShared {
  /** Learning rate. */
  lr: number;
  /** β₁. */
  beta1: number;
  /** β₂. */
  beta2: number;
  /** ε. */
  eps: number;
  /** Decoupled weight decay. */
  weightDecay: number;
}

function access(name: string, prefix: string, count: number, store: boolean, type: string): string {
  const cases = Array.from(
    { length: count },
    (_, t) => `case ${t}u: { ${store ? `${prefix}${t}[i] = v;` : `v = ${prefix}${t}[i];`} }`,
  );
  return store
    ? `fn ${name}(t: u32, i: u32, v: ${type}) {\n  switch t { ${cases.join(" ")} default: {} }\n}`
    : `fn ${name}(t: u32, i: u32) -> ${type} {\n  var v = ${type}();\n  switch t { ${
      cases.join(" ")
    } default: {} }\n  return v;\n}`;
}

/** The launch classes: vec4 (contiguous, sizes and offsets multiples of 4), scalar, strided. */
type Layout = "vec4" | "scalar" | "strided";

function layoutOf(it: AdamWItem): Layout {
  if (!it.grad.isContiguous) return "strided";
  const aligned = [
    it.param.size,
    it.param.offset,
    it.grad.offset,
    it.expAvg.offset,
    it.expAvgSq.offset,
  ]
    .every((x) => x % 4 === 0);
  return aligned ? "vec4" : "scalar";
}

/**
 * AdamW over many parameters, several per launch, in place (torch.optim.AdamW's arithmetic,
 * as adamwUpdate): p ← p·(1 − lr·wd); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
 * p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε).
 */
export function adamwUpdateMany(items: readonly AdamWItem[], a: AdamWShared): void {
  const views = items.map((it) => {
    const n = it.param.size;
    needContiguousF32("adamw", "param", it.param, n);
    needContiguousF32("adamw", "exp_avg", it.expAvg, n);
    needContiguousF32("adamw", "exp_avg_sq", it.expAvgSq, n);
    return gradView3(it.grad, it.param);
  });
  const stage = gpuDevice("adamw").limits.maxStorageBuffersPerShaderStage;
  const per = Math.max(1, Math.min(MOST, Math.floor(stage / 4)));
  for (const layout of ["vec4", "scalar", "strided"] as const) {
    const strided = layout === "strided";
    const w = layout === "vec4" ? 4 : 1;
    const type = w === 4 ? "vec4<f32>" : "f32";
    const list = items.map((_, i) => i).filter((i) =>
      items[i].param.size > 0 && layoutOf(items[i]) === layout
    );
    for (let c = 0; c < list.length; c += per) {
      const chunk = list.slice(c, c + per);
      const T = chunk.length;
      const start: number[] = [];
      let n = 0;
      for (const i of chunk) {
        start.push(n);
        n += items[i].param.size / w;
      }
      const bind = (prefix: string, write: boolean) =>
        chunk.map((_, t) => ({
          name: `${prefix}${t}`,
          type,
          access: write ? "read_write" as const : "read" as const,
        }));
      const k = kernel({
        name: `adamw_multi_${T}${strided ? "_strided" : w === 4 ? "_vec4" : ""}`,
        bindings: [...bind("P", true), ...bind("G", false), ...bind("M", true), ...bind("V", true)],
        workgroupSize: [WG],
        params: ADAMW_MULTI,
        prelude: [
          access("load_p", "P", T, false, type),
          access("store_p", "P", T, true, type),
          access("load_g", "G", T, false, type),
          access("load_m", "M", T, false, type),
          access("store_m", "M", T, true, type),
          access("load_v", "V", T, false, type),
          access("store_v", "V", T, true, type),
        ].join("\n"),
        body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  var t = 0u;
  for (var j = 1u; j < ${T}u; j++) { if (i >= p_start(j)) { t = j; } }
  let l = i - p_start(t);
  let ip = p_pOffset(t) + l; let im = p_mOffset(t) + l; let iv = p_vOffset(t) + l;
  ${
          strided
            ? `let d12 = p_gD1(t) * p_gD2(t);
  let r = l % d12;
  let g = load_g(t, p_gOffset(t) + (l / d12) * p_gS0(t) + (r / p_gD2(t)) * p_gS1(t) + (r % p_gD2(t)) * p_gS2(t));`
            : "let g = load_g(t, p_gOffset(t) + l);"
        }
  let b1 = p_beta1(); let b2 = p_beta2();
  let m = b1 * load_m(t, im) + (1.0 - b1) * g;
  let v = b2 * load_v(t, iv) + (1.0 - b2) * g * g;
  store_m(t, im, m);
  store_v(t, iv, v);
  let p = load_p(t, ip) * p_decay();
  store_p(t, ip, p - p_stepSize(t) * m / (sqrt(v) / p_bc2Sqrt(t) + p_eps()));`,
      });
      const words = ADAMW_MULTI.pack({
        n,
        beta1: a.beta1,
        beta2: a.beta2,
        decay: 1 - a.lr * a.weightDecay,
        eps: a.eps,
        start,
        pOffset: chunk.map((i) => items[i].param.offset / w),
        gOffset: chunk.map((i) => items[i].grad.offset / w),
        gD1: chunk.map((i) => views[i][0]),
        gD2: chunk.map((i) => views[i][1]),
        gS0: chunk.map((i) => views[i][2]),
        gS1: chunk.map((i) => views[i][3]),
        gS2: chunk.map((i) => views[i][4]),
        mOffset: chunk.map((i) => items[i].expAvg.offset / w),
        vOffset: chunk.map((i) => items[i].expAvgSq.offset / w),
        stepSize: chunk.map((i) => a.lr / items[i].biasCorrection1),
        bc2Sqrt: chunk.map((i) => Math.sqrt(items[i].biasCorrection2)),
      });
      const bufs = [
        ...chunk.map((i) => items[i].param.storage("adamw").buf),
        ...chunk.map((i) => items[i].grad.storage("adamw").buf),
        ...chunk.map((i) => items[i].expAvg.storage("adamw").buf),
        ...chunk.map((i) => items[i].expAvgSq.storage("adamw").buf),
      ];
      dispatch(k, bufs, words, grid1d(n, WG));
    }
  }
}
