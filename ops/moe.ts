/**
 * Mixture-of-Experts kernels (DeepSeekMoE routing and dispatch), all on the GPU with no host
 * round-trip and no launch per expert or per token:
 *
 * - `moeRoute`: top-k of (sigmoid scores + correction bias) per token, optionally
 *   group-limited (HF `n_group` / `topk_group`: only the experts of the `topk_group` groups
 *   with the best top-2 sums compete); the weights come from the unbiased scores, renormalised
 *   and scaled (one thread per token). Differentiable in the scores.
 * - `moePlan`: a stable counting sort of the N·K (token, slot) pairs by expert: per-block
 *   histograms (u32 atomics), one single-workgroup scan that yields the per-expert counts,
 *   the exclusive offsets and each block's base, then a placement pass that ranks each pair
 *   within its block. `perm[pos]` is the pair id `n·K + k` at sorted position `pos`,
 *   `inv[n·K + k]` its position. Deterministic: pairs keep token order within an expert.
 * - `moeDispatch` / `moeCombine`: gather the token rows in sorted order, and the weighted
 *   gather-and-sum back to tokens through `inv` (no atomics, fixed summation order).
 * - `groupedMatmul`: y_r = a_r · W_eᵀ for every row r of expert e's group, all experts in one
 *   launch of the matmul kernel template in its grouped-rows mode (ops/matmul.ts: the same
 *   register tiles and GPU/CPU tile configurations as dense matmul). The grid is sized from
 *   the row count on the host (ceil(M/BM) + E row tiles, an upper bound on the tiles the
 *   groups need); each workgroup finds its expert from the offsets and masks rows past its
 *   group's end. Backward: dA by the same kernel with W untransposed, dW by
 *   `groupedWeightGrad` (the template's grouped-inner mode: one launch, the expert as the
 *   batch axis, k running over the expert's own rows).
 * - `moeBiasUpdate`: aux-loss-free balancing, bias_e += γ·sign(mean load − load_e), in place.
 * - `moeSequenceFraction`: the f_i of the sequence-wise auxiliary loss.
 *
 * Only f32 is supported (the router runs in f32 by definition; experts follow the model).
 */
import { noGrad, record } from "../core/autograd.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous, denseView, MATH_WGSL } from "./elementwise.ts";
import { columnsPerThread, grid1d, linearId } from "./grid.ts";
import { groupedInnerProduct, groupedRowsAndInner, groupedRowsProduct } from "./matmul.ts";
import { bucketSort } from "./bucket_sort.ts";
import { usablePrior } from "./grad_prior.ts";
import { checkIndexRange } from "./check_indices.ts";

const WG = 256;

/** The dispatch plan of one routing: pairs grouped by expert. Dispose with `disposePlan`. */
export interface MoePlan {
  /** Tokens N. */
  readonly tokens: number;
  /** Experts per token K. */
  readonly topK: number;
  /** Experts E. */
  readonly numExperts: number;
  /** i32 [E]: pairs routed to each expert (the load). */
  readonly counts: Tensor;
  /** i32 [E + 1]: exclusive prefix sums of `counts` (offsets[E] = N·K). */
  readonly offsets: Tensor;
  /** i32 [N·K]: the pair id n·K + k at each sorted position. */
  readonly perm: Tensor;
  /** i32 [N·K]: the sorted position of each pair id. */
  readonly inv: Tensor;
}

/** Frees the tensors of a plan. */
export function disposePlan(plan: MoePlan): void {
  plan.counts.dispose();
  plan.offsets.dispose();
  plan.perm.dispose();
  plan.inv.dispose();
}

// ---- helpers ------------------------------------------------------------------------------

function checkT(op: string, x: unknown, arg: string, dtype: string, rank: number): Tensor {
  if (!(x instanceof Tensor)) throw new MoongradError(op, `${arg} must be a Tensor`);
  x.storage(op);
  if (x.dtype !== dtype || x.rank !== rank) {
    throw new MoongradError(
      op,
      `${arg} must be ${dtype} of rank ${rank}, got ${x.dtype} ${fmtShape(x.shape)}`,
    );
  }
  return x;
}

function buf(t: Tensor, op: string) {
  return t.storage(op).buf;
}

/** A 1-D launch of `n` threads (spilling into y past 65535 workgroups). */
function launch1d(
  k: ReturnType<typeof kernel>,
  bufs: Tensor[],
  words: Uint32Array,
  n: number,
  op: string,
) {
  if (n === 0) return;
  dispatch(k, bufs.map((t) => buf(t, op)), words, grid1d(n, WG));
}

/** `f(u)` for u = 0 … G − 1, joined (the unrolled column loop of the row-gather kernels). */
function unrolled(G: number, f: (u: number) => string): string {
  return Array.from({ length: G }, (_, u) => f(u)).join("\n  ");
}

/** Routing: tokens, experts, k, offsets of scores and bias, scale, normalize, the groups. */
const ROUTE = params("moe_route", {
  n: "u32",
  e: "u32",
  k: "u32",
  sOffset: "u32",
  biasOffset: "u32",
  scale: "f32",
  normalize: "u32",
  nGroup: "u32",
  topkGroup: "u32",
  logits: "u32",
});
/** Routing backward: tokens, experts, k, offsets of scores, indices and g, scale, normalize. */
const ROUTE_BACKWARD = params("moe_route_backward", {
  n: "u32",
  e: "u32",
  k: "u32",
  sOffset: "u32",
  idxOffset: "u32",
  gOffset: "u32",
  scale: "f32",
  normalize: "u32",
  logits: "u32",
});
/** Row gathers and scatters: elements, row width d, k (or top-k), offsets of two operands. */
const ROWS = params("moe_rows", {
  total: "u32",
  d: "u32",
  k: "u32",
  aOffset: "u32",
  bOffset: "u32",
});
/** moe_combine: ROWS's words plus the residual's offset. */
const COMBINE = params("moe_combine", {
  total: "u32",
  d: "u32",
  k: "u32",
  aOffset: "u32",
  bOffset: "u32",
  rOffset: "u32",
});
/** Router bias update: experts, total pairs, offsets of bias and load, step γ. */
const BIAS_UPDATE = params("moe_bias_update", {
  e: "u32",
  totalPairs: "u32",
  biasOffset: "u32",
  loadOffset: "u32",
  gamma: "f32",
});
/** Sequence fractions: outputs, experts, T·K, offset of the indices, E / (K·T). */
const SEQ_FRACTION = params("moe_seq_fraction", {
  total: "u32",
  e: "u32",
  tk: "u32",
  offset: "u32",
  scale: "f32",
});

// ---- routing ------------------------------------------------------------------------------

/** Options of `moeRoute`. */
export interface RouteOptions {
  /** `routed_scaling_factor` (default 1). */
  scale?: number;
  /** `norm_topk_prob`: divide the selected scores by their sum (+1e-20) first (default true). */
  normalize?: boolean;
  /** `n_group`: experts split into this many equal consecutive groups (default 1). */
  nGroup?: number;
  /** `topk_group`: groups kept per token (default nGroup: no group limit). */
  topkGroup?: number;
  /**
   * The first argument holds the router logits: the kernel takes their sigmoid itself (the
   * eager `sigmoid`'s formula, bit for bit) and the gradient flows to the logits, so the
   * sigmoid and its backward are no separate dispatches (default false: sigmoid scores).
   */
  logits?: boolean;
}

/** The score of element i of `s`: s itself, or its sigmoid when `s` holds logits. */
const SCORE_WGSL = `
fn score(i: u32) -> f32 {
  let v = s[i];
  if (p_logits() == 1u) { return mg_sigmoid(v); }
  return v;
}`;

const ROUTE_PRELUDE = MATH_WGSL + SCORE_WGSL + `
const LOWEST: f32 = -0x1.fffffep+127f; // the lowest finite f32 (Tint rejects anything beyond)

// Sum of the two largest s + bias among experts [start, start + gs) of the token at base.
fn group_score(base: u32, boff: u32, start: u32, gs: u32) -> f32 {
  var b1 = score(base + start) + bias[boff + start];
  var b2 = LOWEST;
  for (var i = 1u; i < gs; i++) {
    let v = score(base + start + i) + bias[boff + start + i];
    if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
  }
  return b1 + b2;
}`;

/**
 * DeepSeek-V3 routing (HF `DeepseekV3MoE.route_tokens_to_experts`). `scores` f32 [N, E]
 * (sigmoid outputs), `bias` f32 [E] (`e_score_correction_bias`). Per token, with
 * c = score + bias:
 * - group limit (when 1 < topkGroup < nGroup): each of the nGroup consecutive groups of
 *   E / nGroup experts scores the sum of its two largest c; the topkGroup best groups are kept
 *   (ties: lower group index first) and every expert of the other groups competes with c = 0
 *   (HF's `masked_fill(~mask, 0.0)`, not −∞: a masked expert can still beat a kept one whose
 *   c is negative);
 * - the K experts with the largest c (ties: lower index first) give `indices` i32 [N, K]
 *   (best first) and `weights` f32 [N, K] = score_sel / (Σ score_sel + 1e-20) · scale (or
 *   score_sel · scale without normalisation).
 * The bias only selects: the weights and their gradient (to `scores`, none to `bias`) use
 * the unbiased scores.
 * @example
 * ```ts
 * const { weights, indices } = moeRoute(scores, bias, 8, { scale: 2.5, nGroup: 8, topkGroup: 4 });
 * ```
 */
export function moeRoute(
  scores: Tensor,
  bias: Tensor,
  k: number,
  options: RouteOptions = {},
): { weights: Tensor; indices: Tensor } {
  const op = "moeRoute";
  checkT(op, scores, "scores", "f32", 2);
  checkT(op, bias, "bias", "f32", 1);
  const [n, e] = scores.shape;
  if (bias.shape[0] !== e) {
    throw new MoongradError(
      op,
      `bias ${fmtShape(bias.shape)} must have one entry per expert of scores ${
        fmtShape(scores.shape)
      }`,
    );
  }
  if (!Number.isInteger(k) || k < 1 || k > e) {
    throw new MoongradError(op, `k must be an integer in 1..${e} (experts), got ${k}`);
  }
  const scale = options.scale ?? 1;
  const normalize = options.normalize ?? true;
  const logits = options.logits ?? false;
  if (typeof logits !== "boolean") {
    throw new MoongradError(op, `options.logits must be a boolean, got ${String(logits)}`);
  }
  if (!Number.isFinite(scale)) throw new MoongradError(op, `scale must be finite, got ${scale}`);
  const nGroup = options.nGroup ?? 1;
  const topkGroup = options.topkGroup ?? nGroup;
  if (!Number.isInteger(nGroup) || nGroup < 1 || e % nGroup !== 0) {
    throw new MoongradError(
      op,
      `nGroup must be a positive divisor of ${e} (experts), got ${nGroup}`,
    );
  }
  if (!Number.isInteger(topkGroup) || topkGroup < 1 || topkGroup > nGroup) {
    throw new MoongradError(op, `topkGroup must be an integer in 1..${nGroup}, got ${topkGroup}`);
  }
  // Keeping every group is no limit at all: route as one group.
  const grouped = topkGroup < nGroup;
  if (grouped && e / nGroup < 2) {
    throw new MoongradError(
      op,
      `groups need >= 2 experts (a group scores its top-2 sum), got ${e} / ${nGroup}`,
    );
  }
  const weights = Tensor.empty([n, k], "f32");
  const indices = Tensor.empty([n, k], "i32");
  const s = denseView(scores);
  const b = denseView(bias);
  const kern = kernel({
    name: "moe_route",
    bindings: [
      { name: "s", type: "f32", access: "read" },
      { name: "bias", type: "f32", access: "read" },
      { name: "w", type: "f32", access: "read_write" },
      { name: "idx", type: "i32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: ROUTE,
    prelude: ROUTE_PRELUDE,
    body: `
  let t = ${linearId(WG)};
  let n = p_n();
  if (t >= n) { return; }
  let e = p_e();
  let k = p_k();
  let base = p_sOffset() + t * e;
  let boff = p_biasOffset();
  let ng = p_nGroup();
  let kg = p_topkGroup();
  let gs = e / ng;
  let grouped = kg < ng;
  // The kg-th best group by (top-2 sum desc, index asc): groups at or before it are kept.
  var cs = 0.0;
  var ci = 0u;
  if (grouped) {
    for (var j = 0u; j < kg; j++) {
      var bs = 0.0;
      var bg = 0xffffffffu;
      for (var g = 0u; g < ng; g++) {
        let v = group_score(base, boff, g * gs, gs);
        let after = j == 0u || v < cs || (v == cs && g > ci);
        if (after && (bg == 0xffffffffu || v > bs)) { bs = v; bg = g; }
      }
      cs = bs;
      ci = bg;
    }
  }
  var pv = 0.0;
  var pi = 0u;
  var total = 0.0;
  for (var j = 0u; j < k; j++) {
    var bv = 0.0;
    var bi = 0xffffffffu;
    for (var g = 0u; g < ng; g++) {
      var keep = true;
      if (grouped) {
        let gv = group_score(base, boff, g * gs, gs);
        keep = gv > cs || (gv == cs && g <= ci);
      }
      for (var q = 0u; q < gs; q++) {
        let i = g * gs + q;
        var v = 0.0;
        if (keep) { v = score(base + i) + bias[boff + i]; }
        let after = j == 0u || v < pv || (v == pv && i > pi);
        if (after && (bi == 0xffffffffu || v > bv)) { bv = v; bi = i; }
      }
    }
    pv = bv;
    pi = bi;
    let sv = score(base + bi);
    idx[t * k + j] = i32(bi);
    w[t * k + j] = sv;
    total += sv;
  }
  let scale = p_scale();
  let denom = total + 1e-20;
  for (var j = 0u; j < k; j++) {
    let o = t * k + j;
    if (p_normalize() == 1u) { w[o] = w[o] / denom * scale; } else { w[o] = w[o] * scale; }
  }`,
  });
  const words = ROUTE.pack({
    n,
    e,
    k,
    sOffset: s.t.offset,
    biasOffset: b.t.offset,
    scale,
    normalize,
    nGroup: grouped ? nGroup : 1,
    topkGroup: grouped ? topkGroup : 1,
    logits,
  });
  launch1d(kern, [s.t, b.t, weights, indices], words, n, op);
  s.done();
  b.done();
  record(
    weights,
    op,
    [scores],
    (g, _needs, [sv, iv]) => [routeBackward(g, sv, iv, scale, normalize, logits)],
    [scores, indices],
  );
  return { weights, indices };
}

function routeBackward(
  g: Tensor,
  scores: Tensor,
  indices: Tensor,
  scale: number,
  normalize: boolean,
  logits: boolean,
): Tensor {
  const op = "moeRoute.backward";
  const [n, e] = scores.shape;
  const k = indices.shape[1];
  const ds = Tensor.empty([n, e], "f32");
  const gd = denseView(g);
  const s = denseView(scores);
  const kern = kernel({
    name: "moe_route_backward",
    pairable: true,
    bindings: [
      { name: "s", type: "f32", access: "read" },
      { name: "idx", type: "i32", access: "read" },
      { name: "g", type: "f32", access: "read" },
      { name: "ds", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: ROUTE_BACKWARD,
    prelude: MATH_WGSL + SCORE_WGSL,
    body: `
  let t = ${linearId(WG)};
  if (t >= p_n()) { return; }
  let e = p_e();
  let k = p_k();
  let sb = p_sOffset() + t * e;
  let ib = p_idxOffset() + t * k;
  let gb = p_gOffset() + t * k;
  let c = p_scale();
  for (var i = 0u; i < e; i++) { ds[t * e + i] = 0.0; }
  var total = 0.0;
  var dotgs = 0.0;
  for (var j = 0u; j < k; j++) {
    let sv = score(sb + u32(idx[ib + j]));
    total += sv;
    dotgs += g[gb + j] * sv;
  }
  let denom = total + 1e-20;
  for (var j = 0u; j < k; j++) {
    let i = u32(idx[ib + j]);
    if (p_normalize() == 1u) {
      ds[t * e + i] = c * (g[gb + j] / denom - dotgs / (denom * denom));
    } else {
      ds[t * e + i] = c * g[gb + j];
    }
  }
  if (p_logits() == 1u) {
    // Through the sigmoid, as the eager sigmoid's backward forms it: (d · s) · (1 − s).
    for (var i = 0u; i < e; i++) {
      let sv = score(sb + i);
      ds[t * e + i] = ds[t * e + i] * sv * (1.0 - sv);
    }
  }`,
  });
  const words = ROUTE_BACKWARD.pack({
    n,
    e,
    k,
    sOffset: s.t.offset,
    idxOffset: indices.offset,
    gOffset: gd.t.offset,
    scale,
    normalize,
    logits,
  });
  launch1d(kern, [s.t, indices, gd.t, ds], words, n, op);
  gd.done();
  s.done();
  return ds;
}

// ---- the counting sort ---------------------------------------------------------------------

/**
 * Groups the N·K (token, slot) pairs of `indices` i32 [N, K] by expert with the stable
 * counting sort of ops/bucket_sort.ts. Expert ids must lie in 0..numExperts−1: others are an
 * error at the next readback (ops/check_indices.ts; unchecked, they would be dropped from the
 * counts). `trusted: true` skips that check for ids `moeRoute` made. Not differentiable.
 */
export function moePlan(
  indices: Tensor,
  numExperts: number,
  options: { trusted?: boolean } = {},
): MoePlan {
  checkT("moePlan", indices, "indices", "i32", 2);
  if (!options.trusted) checkIndexRange("moePlan", "indices", indices, 0, numExperts);
  const [n, k] = indices.shape;
  return { tokens: n, topK: k, numExperts, ...bucketSort(indices, numExperts) };
}

// ---- dispatch and combine -------------------------------------------------------------------

function checkRows(op: string, x: Tensor, arg: string, rows: number): void {
  checkT(op, x, arg, "f32", 2);
  if (x.shape[0] !== rows) {
    throw new MoongradError(
      op,
      `${arg} ${fmtShape(x.shape)} must have ${rows} rows (the plan's ${
        op === "moeDispatch" ? "tokens" : "pairs"
      })`,
    );
  }
}

/**
 * Sum over a token's K slots of rows of `src` [N·K, D] found through `inv`: [N, D], plus
 * `prior` (contiguous f32 [N, D], a backward pass's accumulated gradient) when given, added
 * after the slot sum as `add(prior, sum)` would.
 */
function gatherSum(src: Tensor, plan: MoePlan, op: string, prior: Tensor | null = null): Tensor {
  const d = src.shape[1];
  const { tokens: n, topK: k } = plan;
  const out = Tensor.empty([n, d], "f32");
  const s = denseView(src);
  const bindings = [
    { name: "src", type: "f32", access: "read" as const },
    { name: "inv", type: "i32", access: "read" as const },
    { name: "dst", type: "f32", access: "read_write" as const },
  ];
  if (prior) bindings.push({ name: "prior", type: "f32", access: "read" });
  const G = columnsPerThread(d);
  const kern = kernel({
    name: "moe_gather_sum",
    pairable: true,
    bindings,
    workgroupSize: [WG],
    params: ROWS,
    body: `
  let i0 = ${linearId(WG)} * ${G}u;
  if (i0 >= p_total()) { return; }
  let d = p_d();
  let k = p_k();
  let t = i0 / d;
  let c0 = i0 % d;
  ${unrolled(G, (u) => `var acc${u} = 0.0;`)}
  for (var j = 0u; j < k; j++) {
    let base = p_aOffset() + u32(inv[t * k + j]) * d + c0;
    ${unrolled(G, (u) => `acc${u} += src[base + ${u}u];`)}
  }
  ${
      unrolled(
        G,
        (u) =>
          `dst[i0 + ${u}u] = ${prior ? `prior[p_bOffset() + i0 + ${u}u] + acc${u}` : `acc${u}`};`,
      )
    }`,
  });
  launch1d(
    kern,
    [s.t, plan.inv, out, ...(prior ? [prior] : [])],
    ROWS.pack({ total: n * d, d, k, aOffset: s.t.offset, bOffset: prior?.offset ?? 0 }),
    n * d / G,
    op,
  );
  s.done();
  return out;
}

/**
 * Gathers the token rows of `x` f32 [N, D] in the plan's sorted order: row `pos` of the result
 * [N·K, D] is x[perm[pos] / K]. Backward: each token sums its K rows (through `inv`).
 */
export function moeDispatch(x: Tensor, plan: MoePlan): Tensor {
  const op = "moeDispatch";
  checkRows(op, x, "x", plan.tokens);
  const d = x.shape[1];
  const m = plan.tokens * plan.topK;
  const out = Tensor.empty([m, d], "f32");
  const s = denseView(x);
  const G = columnsPerThread(d);
  const kern = kernel({
    name: "moe_dispatch",
    bindings: [
      { name: "x", type: "f32", access: "read" },
      { name: "perm", type: "i32", access: "read" },
      { name: "dst", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: ROWS,
    body: `
  let i0 = ${linearId(WG)} * ${G}u;
  if (i0 >= p_total()) { return; }
  let d = p_d();
  let base = p_aOffset() + (u32(perm[i0 / d]) / p_k()) * d + i0 % d;
  ${unrolled(G, (u) => `dst[i0 + ${u}u] = x[base + ${u}u];`)}`,
  });
  launch1d(
    kern,
    [s.t, plan.perm, out],
    ROWS.pack({ total: m * d, d, k: plan.topK, aOffset: s.t.offset, bOffset: 0 }),
    m * d / G,
    op,
  );
  s.done();
  return record(out, op, [x], (g, _n, [inv, perm, counts, offsets], priors) => {
    const p = { ...plan, inv, perm, counts, offsets };
    const prior = usablePrior(priors, 0, x.shape, "f32", g, inv);
    const dx = gatherSum(g, p, "moeDispatch.backward", prior);
    if (prior) priors!.absorb(0);
    return [dx];
  }, [plan.inv, plan.perm, plan.counts, plan.offsets]);
}

/**
 * The weighted return to tokens: y[n] = Σ_k weights[n, k] · ys[inv[n·K + k]], `ys` f32
 * [N·K, D] in sorted order, `weights` f32 [N, K] → [N, D]. Deterministic (a fixed-order sum
 * over each token's K slots, no atomics). With `residual` (f32 [N, D]), returns residual + y,
 * the sum formed in the same kernel (the decoder layer's residual connection, no separate
 * add). Differentiable in `ys`, `weights` and `residual`.
 */
export function moeCombine(
  ys: Tensor,
  weights: Tensor,
  plan: MoePlan,
  residual?: Tensor,
): Tensor {
  const op = "moeCombine";
  const { tokens: n, topK: k } = plan;
  if (residual !== undefined) checkT(op, residual, "residual", "f32", 2);
  checkRows(op, ys, "ys", n * k);
  checkT(op, weights, "weights", "f32", 2);
  if (weights.shape[0] !== n || weights.shape[1] !== k) {
    throw new MoongradError(
      op,
      `weights ${fmtShape(weights.shape)} must be [${n}, ${k}] (tokens, experts per token)`,
    );
  }
  const d = ys.shape[1];
  if (residual && (residual.shape[0] !== n || residual.shape[1] !== d)) {
    throw new MoongradError(
      op,
      `residual ${fmtShape(residual.shape)} must be [${n}, ${d}] (tokens, hidden size)`,
    );
  }
  const out = Tensor.empty([n, d], "f32");
  const y = denseView(ys);
  const w = denseView(weights);
  const r = residual ? denseView(residual) : null;
  const G = columnsPerThread(d);
  const kern = kernel({
    name: r ? "moe_combine_residual" : "moe_combine",
    bindings: [
      { name: "ys", type: "f32", access: "read" },
      { name: "w", type: "f32", access: "read" },
      { name: "inv", type: "i32", access: "read" },
      ...(r ? [{ name: "res", type: "f32", access: "read" as const }] : []),
      { name: "dst", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: COMBINE,
    body: `
  let i0 = ${linearId(WG)} * ${G}u;
  if (i0 >= p_total()) { return; }
  let d = p_d();
  let k = p_k();
  let t = i0 / d;
  let c0 = i0 % d;
  ${unrolled(G, (u) => `var acc${u} = 0.0;`)}
  for (var j = 0u; j < k; j++) {
    let p = t * k + j;
    let wp = w[p_bOffset() + p];
    let base = p_aOffset() + u32(inv[p]) * d + c0;
    ${unrolled(G, (u) => `acc${u} += wp * ys[base + ${u}u];`)}
  }
  ${
      unrolled(
        G,
        (u) => `dst[i0 + ${u}u] = ${r ? `res[p_rOffset() + i0 + ${u}u] + acc${u}` : `acc${u}`};`,
      )
    }`,
  });
  launch1d(
    kern,
    [y.t, w.t, plan.inv, ...(r ? [r.t] : []), out],
    COMBINE.pack({
      total: n * d,
      d,
      k,
      aOffset: y.t.offset,
      bOffset: w.t.offset,
      rOffset: r?.t.offset ?? 0,
    }),
    n * d / G,
    op,
  );
  y.done();
  w.done();
  r?.done();
  const inputs = residual ? [ys, weights, residual] : [ys, weights];
  return record(out, op, inputs, (g, needs, [ysv, wv, inv, perm]) => {
    const gd = denseView(g);
    const res = [
      needs[0] ? combineBackwardRows(gd.t, wv, perm, k) : null,
      needs[1] ? combineBackwardWeights(gd.t, ysv, inv, k) : null,
    ];
    gd.done();
    // The residual's gradient is the upstream gradient itself (autograd aliases it).
    return residual ? [...res, needs[2] ? g : null] : res;
  }, [ys, weights, plan.inv, plan.perm]);
}

/**
 * Workgroup size of both combine gradients: the weights' row reductions and the rows' copy
 * share it, so the two (independent) launches run as one (core/colaunch.ts).
 */
const COMBINE_BWD_WG = 64;

function combineBackwardRows(g: Tensor, weights: Tensor, perm: Tensor, k: number): Tensor {
  const op = "moeCombine.backward";
  const d = g.shape[1];
  const m = perm.shape[0];
  const out = Tensor.empty([m, d], "f32");
  const w = denseView(weights);
  const G = columnsPerThread(d);
  const kern = kernel({
    name: "moe_combine_bwd_rows",
    pairable: true,
    bindings: [
      { name: "g", type: "f32", access: "read" },
      { name: "w", type: "f32", access: "read" },
      { name: "perm", type: "i32", access: "read" },
      { name: "dst", type: "f32", access: "read_write" },
    ],
    workgroupSize: [COMBINE_BWD_WG],
    params: ROWS,
    body: `
  let i0 = ${linearId(COMBINE_BWD_WG)} * ${G}u;
  if (i0 >= p_total()) { return; }
  let d = p_d();
  let p = u32(perm[i0 / d]);
  let wp = w[p_bOffset() + p];
  let base = p_aOffset() + (p / p_k()) * d + i0 % d;
  ${unrolled(G, (u) => `dst[i0 + ${u}u] = wp * g[base + ${u}u];`)}`,
  });
  if (m * d > 0) {
    dispatch(
      kern,
      [buf(g, op), buf(w.t, op), buf(perm, op), buf(out, op)],
      ROWS.pack({ total: m * d, d, k, aOffset: g.offset, bOffset: w.t.offset }),
      grid1d(m * d / G, COMBINE_BWD_WG),
    );
  }
  w.done();
  return out;
}

function combineBackwardWeights(g: Tensor, ys: Tensor, inv: Tensor, k: number): Tensor {
  const op = "moeCombine.backward";
  const [n, d] = g.shape;
  const out = Tensor.empty([n, k], "f32");
  const y = denseView(ys);
  const RW = COMBINE_BWD_WG;
  const kern = kernel({
    name: "moe_combine_bwd_weights",
    pairable: true,
    bindings: [
      { name: "g", type: "f32", access: "read" },
      { name: "ys", type: "f32", access: "read" },
      { name: "inv", type: "i32", access: "read" },
      { name: "dst", type: "f32", access: "read_write" },
    ],
    workgroupSize: [RW],
    params: ROWS,
    prelude: `var<workgroup> red: array<f32, ${RW}>;`,
    body: `
  let p = wid.y * nwg.x + wid.x;
  let valid = p < p_total();
  let d = p_d();
  let k = p_k();
  var acc = 0.0;
  if (valid) {
    let gb = p_aOffset() + (p / k) * d;
    let yb = p_bOffset() + u32(inv[p]) * d;
    for (var c = lidx; c < d; c += ${RW}u) { acc += g[gb + c] * ys[yb + c]; }
  }
  red[lidx] = acc;
  workgroupBarrier();
  for (var s = ${RW / 2}u; s > 0u; s >>= 1u) {
    if (lidx < s) { red[lidx] += red[lidx + s]; }
    workgroupBarrier();
  }
  if (valid && lidx == 0u) { dst[p] = red[0]; }`,
  });
  if (n * k > 0) {
    dispatch(
      kern,
      [buf(g, op), buf(y.t, op), buf(inv, op), buf(out, op)],
      ROWS.pack({ total: n * k, d, k, aOffset: g.offset, bOffset: y.t.offset }),
      grid1d(n * k, 1),
    );
  }
  y.done();
  return out;
}

// ---- grouped matmul -------------------------------------------------------------------------

/**
 * dW[e] = Σ over the rows r of group e of P[r]ᵀ Q[r]: P f32 [M, A], Q f32 [M, B] → f32
 * [E, A, B] (zeros for an empty group). One launch: a workgroup per 16×16 output tile per
 * expert, summing its group's rows in order (deterministic).
 */
export function groupedWeightGrad(p: Tensor, q: Tensor, offsets: Tensor): Tensor {
  const op = "groupedWeightGrad";
  checkT(op, p, "p", "f32", 2);
  checkT(op, q, "q", "f32", 2);
  checkT(op, offsets, "offsets", "i32", 1);
  if (p.shape[0] !== q.shape[0]) {
    throw new MoongradError(
      op,
      `p ${fmtShape(p.shape)} and q ${fmtShape(q.shape)} must have the same rows`,
    );
  }
  const e = offsets.shape[0] - 1;
  if (e < 1 || e > 65535) {
    throw new MoongradError(op, `offsets must hold E + 1 entries with 1 <= E <= 65535`);
  }
  const off = zeroOffset(offsets);
  const out = groupedInnerProduct(p, q, off);
  if (off !== offsets) off.dispose();
  return out;
}

/** Offsets as a contiguous tensor starting at element 0 (the kernels index them from 0). */
function zeroOffset(offsets: Tensor): Tensor {
  if (offsets.isContiguous && offsets.offset === 0) return offsets;
  return noGrad(() => contiguous(offsets));
}

/**
 * Grouped linear layer: rows of `a` f32 [M, I] are grouped by expert (`offsets` i32 [E + 1],
 * non-decreasing, offsets[E] = M, e.g. `MoePlan.offsets`) and row r of group e gives
 * a_r · w[e]ᵀ, `w` f32 [E, O, I] (HF Linear layout per expert) → f32 [M, O]. One launch for
 * all experts; empty groups cost nothing but a skipped workgroup. Differentiable in `a` and
 * `w` (dw per expert summed over its own rows, also one launch).
 */
export function groupedMatmul(a: Tensor, w: Tensor, offsets: Tensor): Tensor {
  const op = "groupedMatmul";
  checkT(op, a, "a", "f32", 2);
  checkT(op, w, "w", "f32", 3);
  checkT(op, offsets, "offsets", "i32", 1);
  if (w.shape[2] !== a.shape[1]) {
    throw new MoongradError(
      op,
      `w ${fmtShape(w.shape)} [E, out, in] must have in = a's columns (a ${fmtShape(a.shape)})`,
    );
  }
  if (offsets.shape[0] !== w.shape[0] + 1) {
    throw new MoongradError(
      op,
      `offsets ${fmtShape(offsets.shape)} must hold E + 1 = ${w.shape[0] + 1} entries`,
    );
  }
  const off = zeroOffset(offsets);
  const out = groupedRowsProduct(a, w, off, true);
  record(out, op, [a, w], (g, needs, [av, wv, ov], priors) => {
    const prior = needs[0] ? usablePrior(priors, 0, a.shape, "f32", g, wv, ov) : null;
    if (prior) priors!.absorb(0);
    // Both gradients: one paired launch (ops/matmul.ts recordPair).
    if (needs[0] && needs[1]) return groupedRowsAndInner(g, wv, av, ov, prior);
    const ga = needs[0] ? groupedRowsProduct(g, wv, ov, false, prior) : null;
    const gw = needs[1] ? groupedWeightGrad(g, av, ov) : null;
    return [ga, gw];
  }, [a, w, off]);
  if (off !== offsets) off.dispose();
  return out;
}

// ---- balancing ------------------------------------------------------------------------------

/**
 * Aux-loss-free balancing, in place and without gradient: bias[e] += γ · sign(mean − load[e])
 * where mean = totalPairs / E, evaluated exactly in integers as sign(totalPairs − E·load[e]).
 * `bias` f32 [E] (contiguous), `load` i32 [E].
 */
export function moeBiasUpdate(
  bias: Tensor,
  load: Tensor,
  totalPairs: number,
  gamma: number,
): void {
  const op = "moeBiasUpdate";
  checkT(op, bias, "bias", "f32", 1);
  checkT(op, load, "load", "i32", 1);
  if (!bias.isContiguous || load.shape[0] !== bias.shape[0]) {
    throw new MoongradError(
      op,
      `bias must be contiguous and load must match it: bias ${fmtShape(bias.shape)}, load ${
        fmtShape(load.shape)
      }`,
    );
  }
  if (!Number.isFinite(gamma)) throw new MoongradError(op, `gamma must be finite, got ${gamma}`);
  if (!Number.isInteger(totalPairs) || totalPairs < 0 || totalPairs >= 2 ** 31) {
    throw new MoongradError(op, `totalPairs must be an integer in 0..2^31-1, got ${totalPairs}`);
  }
  const e = bias.shape[0];
  const ld = denseView(load);
  const kern = kernel({
    name: "moe_bias_update",
    bindings: [
      { name: "bias", type: "f32", access: "read_write" },
      { name: "load", type: "i32", access: "read" },
    ],
    workgroupSize: [WG],
    params: BIAS_UPDATE,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_e()) { return; }
  // sign(total − E·load) without overflow: load > floor(total / E) implies E·load > total.
  let total = p_totalPairs();
  let e = p_e();
  let l = u32(load[p_loadOffset() + i]);
  var s = 0.0;
  if (l > total / e) { s = -1.0; } else if (total > e * l) { s = 1.0; }
  bias[p_biasOffset() + i] = bias[p_biasOffset() + i] + p_gamma() * s;`,
  });
  launch1d(
    kern,
    [bias, ld.t],
    BIAS_UPDATE.pack({ e, totalPairs, biasOffset: bias.offset, loadOffset: ld.t.offset, gamma }),
    e,
    op,
  );
  ld.done();
}

/**
 * The f_i of the sequence-wise auxiliary loss: for `indices` i32 [B, T, K] and E experts,
 * f32 [B, E] with f[b, i] = (E / (K·T)) · #{(t, k): indices[b, t, k] = i}. No gradient.
 */
export function moeSequenceFraction(indices: Tensor, numExperts: number): Tensor {
  const op = "moeSequenceFraction";
  checkT(op, indices, "indices", "i32", 3);
  if (!Number.isInteger(numExperts) || numExperts < 1) {
    throw new MoongradError(op, `numExperts must be a positive integer, got ${numExperts}`);
  }
  const [b, t, k] = indices.shape;
  const e = numExperts;
  const out = Tensor.empty([b, e], "f32");
  const ix = denseView(indices);
  const kern = kernel({
    name: "moe_seq_fraction",
    bindings: [
      { name: "idx", type: "i32", access: "read" },
      { name: "f", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: SEQ_FRACTION,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_total()) { return; }
  let e = p_e();
  let tk = p_tk();
  let seq = i / e;
  let x = i32(i % e);
  var c = 0u;
  for (var j = 0u; j < tk; j++) { if (idx[p_offset() + seq * tk + j] == x) { c++; } }
  f[i] = f32(c) * p_scale();`,
  });
  launch1d(
    kern,
    [ix.t, out],
    SEQ_FRACTION.pack({
      total: b * e,
      e,
      tk: t * k,
      offset: ix.t.offset,
      scale: t * k > 0 ? e / (k * t) : 0,
    }),
    b * e,
    op,
  );
  ix.done();
  return out;
}
