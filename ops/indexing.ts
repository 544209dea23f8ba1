/**
 * Indexing ops: indexSelect, gather, embedding (reads), scatterAdd, indexAdd (writes with
 * summation), and topk.
 *
 * Index conventions, shared by every op here (index tensors must be i32):
 * - an index `j` into an axis of length `n` is valid when `-n <= j < n`; a negative index
 *   counts from the end (`j + n`), as in Python;
 * - an index outside that range is an error: every op here records a range check of its index
 *   (ops/check_indices.ts), and the next readback throws a MoongradError naming the op, the
 *   value, its position and the range. With `setCheckIndices(false)` the kernels still never
 *   touch memory outside the tensors: reads (indexSelect, gather, embedding) produce 0 for
 *   it, writes (scatterAdd, indexAdd) drop its contribution, and so do the gradients.
 * - embedding ids must lie in [0, V): token ids do not count from the end.
 *
 * Reads use a strided gather (one thread per output element). `indexAdd` and the backward of
 * `indexSelect` / `embedding` are deterministic (ops/index_add_sorted.ts: rows grouped by
 * target with a counting sort, summed in index order), so training runs repeat bit for bit.
 * `scatterAdd` (and so the backward of `gather`) adds with atomics into a contiguous
 * accumulator: WebGPU has no float atomics, so f32 addition is an atomic compare-exchange
 * loop on the u32 bit pattern; repeated indices are summed exactly once each, but the order
 * of the additions (the last bits of a sum of 3 or more terms) is not deterministic.
 * i32 uses `atomicAdd`; f16 accumulates in f32 and is rounded once at the end.
 * Index tensors and sources may be any strided views; no copies are made for them.
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { normalizeAxis, sameShape } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { noGrad, record } from "../core/autograd.ts";
import { grid1d, linearId } from "./grid.ts";
import { cast, contiguous } from "./elementwise.ts";
import { copyInto, fillInPlace } from "./copy.ts";
import { reshape } from "./layout.ts";
import { indexAddSorted } from "./index_add_sorted.ts";
import { checkIndexRange } from "./check_indices.ts";

const WG = 256;
/** Highest rank the index kernels accept (their shapes and strides travel as parameters). */
const MAX_RANK = 12;

// ---- validation -------------------------------------------------------------------------

function checkTensor(op: string, x: unknown, arg: string): Tensor {
  if (!(x instanceof Tensor)) {
    throw new MoongradError(op, `${arg} must be a Tensor, got ${typeof x}`);
  }
  x.storage(op);
  if (x.rank > MAX_RANK) {
    throw new MoongradError(
      op,
      `${arg} ${fmtShape(x.shape)} has rank ${x.rank}; at most ${MAX_RANK} is supported`,
    );
  }
  return x;
}

function checkIndex(op: string, index: unknown, arg = "index"): Tensor {
  const t = checkTensor(op, index, arg);
  if (t.dtype !== "i32") {
    throw new MoongradError(
      op,
      `${arg} must have dtype i32, got ${t.dtype} ${fmtShape(t.shape)} (cast with .cast("i32"))`,
    );
  }
  return t;
}

function checkRank1(op: string, x: Tensor, arg: string): void {
  if (x.rank === 0) {
    throw new MoongradError(op, `${arg} must have rank >= 1, got a scalar`);
  }
}

function checkAddable(op: string, x: Tensor, src: Tensor): void {
  if (x.dtype === "bool") {
    throw new MoongradError(op, `x must be f32, f16 or i32, got bool ${fmtShape(x.shape)}`);
  }
  if (src.dtype !== x.dtype) {
    throw new MoongradError(
      op,
      `src dtype ${src.dtype} ${fmtShape(src.shape)} must equal x dtype ${x.dtype} ${
        fmtShape(x.shape)
      }`,
    );
  }
}

/** A view of the 1-D `index` with `shape`, reading index[c[axis]] at coordinates c. */
function spreadIndex(index: Tensor, shape: readonly number[], axis: number): Tensor {
  const strides = shape.map((_, d) => (d === axis ? index.strides[0] : 0));
  return index.view(shape, strides, index.offset);
}

// ---- kernels ----------------------------------------------------------------------------

/**
 * gather: elements, rank, axis and its length in x, the index shape, x's strides and offset,
 * the index's strides and offset (ranks up to MAX_RANK).
 */
const GATHER = params("gather", {
  n: "u32",
  rank: "u32",
  axis: "u32",
  axisLen: "u32",
  shape: ["u32", MAX_RANK],
  xStrides: ["u32", MAX_RANK],
  xOffset: "u32",
  idxStrides: ["u32", MAX_RANK],
  idxOffset: "u32",
});

/** scatter_add: as gather, with the accumulator's and the source's strides and offsets. */
const SCATTER_ADD = params("scatter_add", {
  n: "u32",
  rank: "u32",
  axis: "u32",
  axisLen: "u32",
  shape: ["u32", MAX_RANK],
  accStrides: ["u32", MAX_RANK],
  accOffset: "u32",
  idxStrides: ["u32", MAX_RANK],
  idxOffset: "u32",
  srcStrides: ["u32", MAX_RANK],
  srcOffset: "u32",
});

/** topk: rows, row length, k, element offset of the (contiguous) input. */
const TOPK = params("topk", { rows: "u32", n: "u32", k: "u32", offset: "u32" });

const RESOLVE_FN = `
fn resolve(j: i32, len: u32) -> i32 {
  let n = i32(len);
  if (j < -n || j >= n) { return -1; }
  return select(j, j + n, j < 0);
}`;

/**
 * out[c] = x[c with c[axis] = index[c]] for every c in index.shape (same rank as x), or 0
 * when the index is out of range. x and index may be strided views.
 */
function gatherRaw(op: string, x: Tensor, axis: number, index: Tensor): Tensor {
  const out = Tensor.empty(index.shape, x.dtype);
  const n = out.size;
  if (n === 0) return out;
  const t = wgslType(x.dtype);
  const words = GATHER.pack({
    n,
    rank: x.rank,
    axis,
    axisLen: x.shape[axis],
    shape: index.shape,
    xStrides: x.strides,
    xOffset: x.offset,
    idxStrides: index.strides,
    idxOffset: index.offset,
  });
  const k = kernel({
    name: "gather",
    pairable: true,
    bindings: [
      { name: "x", type: t, access: "read" },
      { name: "idx", type: "i32", access: "read" },
      { name: "out", type: t, access: "read_write" },
    ],
    workgroupSize: [WG],
    params: GATHER,
    prelude: RESOLVE_FN,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let axis = p_axis();
  var rem = i;
  var xo = p_xOffset();
  var io = p_idxOffset();
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    let c = rem % dim;
    rem /= dim;
    io += c * p_idxStrides(u32(d));
    if (u32(d) != axis) { xo += c * p_xStrides(u32(d)); }
  }
  let j = resolve(idx[io], p_axisLen());
  if (j < 0) {
    out[i] = ${t}(0);
  } else {
    out[i] = x[xo + u32(j) * p_xStrides(axis)];
  }`,
  });
  dispatch(
    k,
    [x.storage(op).buf, index.storage(op).buf, out.storage(op).buf],
    words,
    grid1d(n, WG),
  );
  return out;
}

/**
 * acc[c with c[axis] = index[c]] += src[c] for every c in index.shape, in place. `acc` is a
 * contiguous f32 or i32 tensor of x's rank; index and src are views of the same shape.
 */
function scatterAddRaw(op: string, acc: Tensor, axis: number, index: Tensor, src: Tensor): void {
  const n = index.size;
  if (n === 0) return;
  const isInt = acc.dtype === "i32";
  const srcType = wgslType(src.dtype);
  const words = SCATTER_ADD.pack({
    n,
    rank: acc.rank,
    axis,
    axisLen: acc.shape[axis],
    shape: index.shape,
    accStrides: acc.strides,
    accOffset: acc.offset,
    idxStrides: index.strides,
    idxOffset: index.offset,
    srcStrides: src.strides,
    srcOffset: src.offset,
  });
  const add = isInt ? "atomicAdd(&acc[ao], v);" : `atomic_add_f32(ao, v);`;
  const k = kernel({
    name: "scatter_add",
    bindings: [
      { name: "idx", type: "i32", access: "read" },
      { name: "src", type: srcType, access: "read" },
      { name: "acc", type: isInt ? "atomic<i32>" : "atomic<u32>", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: SCATTER_ADD,
    prelude: RESOLVE_FN + (isInt ? "" : `
fn atomic_add_f32(o: u32, v: f32) {
  var old = atomicLoad(&acc[o]);
  loop {
    let r = atomicCompareExchangeWeak(&acc[o], old, bitcast<u32>(bitcast<f32>(old) + v));
    if (r.exchanged) { break; }
    old = r.old_value;
  }
}`),
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  let axis = p_axis();
  var rem = i;
  var ao = p_accOffset();
  var io = p_idxOffset();
  var so = p_srcOffset();
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    let c = rem % dim;
    rem /= dim;
    io += c * p_idxStrides(u32(d));
    so += c * p_srcStrides(u32(d));
    if (u32(d) != axis) { ao += c * p_accStrides(u32(d)); }
  }
  let j = resolve(idx[io], p_axisLen());
  if (j < 0) { return; }
  ao += u32(j) * p_accStrides(axis);
  let v = ${isInt ? "src[so]" : "f32(src[so])"};
  ${add}`,
  });
  dispatch(
    k,
    [index.storage(op).buf, src.storage(op).buf, acc.storage(op).buf],
    words,
    grid1d(n, WG),
  );
}

/**
 * A new tensor of `shape` and `dtype`: `base` (or zeros) plus src scattered along `axis`.
 * Accumulates in f32 for f16 and rounds once at the end.
 */
function scatterInto(
  op: string,
  base: Tensor | null,
  shape: readonly number[],
  dtype: DType,
  axis: number,
  index: Tensor,
  src: Tensor,
): Tensor {
  return noGrad(() => {
    const accType: DType = dtype === "i32" ? "i32" : "f32";
    let acc: Tensor;
    if (base === null) {
      acc = Tensor.empty(shape, accType);
      fillInPlace(acc, 0);
    } else if (base.dtype === accType) {
      acc = Tensor.empty(shape, accType);
      copyInto(base, acc);
    } else {
      acc = cast(base, accType);
    }
    scatterAddRaw(op, acc, axis, index, src);
    if (accType === dtype) return acc;
    const out = cast(acc, dtype);
    acc.dispose();
    return out;
  });
}

// ---- reads ------------------------------------------------------------------------------

/**
 * Selects entries along `axis` at the positions held by the 1-D i32 `index` (torch
 * `index_select`): the output has x's shape with `index.size` on `axis`; positions may repeat.
 * Negative positions count from the end; others out of range are an error at the next
 * readback (see the module doc).
 * Backward: the gradient to x is `indexAdd` of the output gradient (repeats summed).
 *
 * @example Pick rows by index (repeats allowed)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 2], [3, 4], [5, 6]]);
 * const rows = mg.tensor([2, 0, 2], { dtype: "i32" });
 * console.log(await mg.indexSelect(x, 0, rows).toArray()); // [[5, 6], [1, 2], [5, 6]]
 * ```
 */
export function indexSelect(x: Tensor, axis: number, index: Tensor): Tensor {
  const op = "indexSelect";
  checkTensor(op, x, "x");
  checkIndex(op, index);
  checkRank1(op, x, "x");
  if (index.rank !== 1) {
    throw new MoongradError(op, `index must be 1-D, got shape ${fmtShape(index.shape)}`);
  }
  const ax = normalizeAxis(op, axis, x.rank);
  checkIndexRange(op, "index", index, -x.shape[ax], x.shape[ax]);
  return selectRows(op, x, ax, index);
}

/** indexSelect after validation (embedding checks its ids against [0, V) itself). */
function selectRows(op: string, x: Tensor, ax: number, index: Tensor): Tensor {
  const outShape = [...x.shape];
  outShape[ax] = index.shape[0];
  const spread = spreadIndex(index, outShape, ax);
  const out = gatherRaw(op, x, ax, spread);
  spread.dispose();
  return record(out, op, [x, index], (g, needs, [index]) => {
    if (!needs[0]) return [null, null];
    return [indexAddSorted(null, x.shape, x.dtype, ax, index, g), null];
  }, [index]);
}

/**
 * PyTorch `gather`: `out[c] = x[c with c[axis] = index[c]]` for every coordinate c of
 * `index`, which is i32 with x's rank and `index.shape[d] <= x.shape[d]` on every axis d
 * but `axis`. The output has index's shape. Negative indices count from the end; others out
 * of range are an error at the next readback (see the module doc). Backward: the gradient to x is `scatterAdd` of the output gradient.
 *
 * @example The log-probability of each target token
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const logp = mg.tensor([[-0.1, -2.5, -3.0], [-1.2, -0.4, -2.2]]); // [T, vocab]
 * const targets = mg.tensor([[0], [1]], { dtype: "i32" }); // [T, 1]
 * console.log(await mg.gather(logp, 1, targets).toArray()); // [[-0.1], [-0.4]] (to f32 precision)
 * ```
 */
export function gather(x: Tensor, axis: number, index: Tensor): Tensor {
  const op = "gather";
  checkTensor(op, x, "x");
  checkIndex(op, index);
  checkRank1(op, x, "x");
  const ax = normalizeAxis(op, axis, x.rank);
  checkCovered(op, "x", x, index, ax);
  checkIndexRange(op, "index", index, -x.shape[ax], x.shape[ax]);
  const out = gatherRaw(op, x, ax, index);
  return record(out, op, [x, index], (g, needs, [index]) => {
    if (!needs[0]) return [null, null];
    return [scatterInto(op, null, x.shape, x.dtype, ax, index, g), null];
  }, [index]);
}

/** Throws unless index has t's rank and fits inside t on every axis but `skip` (-1: none). */
function checkCovered(op: string, arg: string, t: Tensor, index: Tensor, skip: number): void {
  const ok = index.rank === t.rank &&
    index.shape.every((d, i) => i === skip || d <= t.shape[i]);
  if (!ok) {
    throw new MoongradError(
      op,
      `index ${fmtShape(index.shape)} must have the rank of ${arg} ${fmtShape(t.shape)} and ` +
        `size <= ${arg}'s on every axis${skip >= 0 ? ` but ${skip}` : ""}`,
    );
  }
}

/**
 * Looks up rows of `weight` ([V, D]) at the i32 `ids` (any shape): the output is
 * `[...ids.shape, D]`. Ids outside [0, V) are an error at the next readback (checked on the
 * GPU; see the module doc), never a zero row.
 * Backward: the gradient to weight sums the output gradient rows of repeated ids.
 *
 * @example Look up token embeddings
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const table = mg.tensor([[0, 0], [1, 1], [2, 2]]); // vocab 3, dim 2
 * const ids = mg.tensor([[2, 1]], { dtype: "i32" }); // [batch 1, 2 tokens]
 * console.log(await mg.embedding(table, ids).toArray()); // [[[2, 2], [1, 1]]]
 * ```
 */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  const op = "embedding";
  checkTensor(op, weight, "weight");
  checkIndex(op, ids, "ids");
  if (weight.rank !== 2) {
    throw new MoongradError(
      op,
      `weight must be 2-D [vocab, dim], got ${weight.dtype} ${fmtShape(weight.shape)}`,
    );
  }
  if (ids.rank >= MAX_RANK) {
    throw new MoongradError(op, `ids ${fmtShape(ids.shape)} has too many axes`);
  }
  checkIndexRange(op, "ids", ids, 0, weight.shape[0]);
  const flat = noGrad(() => reshape(ids, [ids.size]));
  const rows = selectRows(op, weight, 0, flat);
  flat.dispose();
  const out = reshape(rows, [...ids.shape, weight.shape[1]]);
  rows.dispose();
  return out;
}

// ---- writes -----------------------------------------------------------------------------

/**
 * Out-of-place torch `scatter_add`: returns a copy of x with `src[c]` added at
 * `c with c[axis] = index[c]` for every coordinate c of `index`. index is i32 with x's rank,
 * `index.shape[d] <= src.shape[d]` on every axis and `<= x.shape[d]` on every axis but
 * `axis`; only the leading `index.shape` block of src is used. Repeated targets are summed
 * (atomically: see the module doc); negative indices count from the end, others out of range
 * are an error at the next readback. dtypes: f32, f16 (accumulated in f32), i32.
 * Backward: dx = g, dsrc = gather(g, axis, index) (0 where src is unused).
 *
 * @example Sum values into buckets
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const counts = mg.zeros([3]);
 * const bucket = mg.tensor([0, 2, 2, 1, 2], { dtype: "i32" });
 * console.log(await mg.scatterAdd(counts, 0, bucket, mg.ones([5])).toArray()); // [1, 1, 3]
 * ```
 */
export function scatterAdd(x: Tensor, axis: number, index: Tensor, src: Tensor): Tensor {
  const op = "scatterAdd";
  checkTensor(op, x, "x");
  checkIndex(op, index);
  checkTensor(op, src, "src");
  checkRank1(op, x, "x");
  checkAddable(op, x, src);
  const ax = normalizeAxis(op, axis, x.rank);
  checkCovered(op, "x", x, index, ax);
  checkCovered(op, "src", src, index, -1);
  checkIndexRange(op, "index", index, -x.shape[ax], x.shape[ax]);
  const srcBlock = sameShape(src.shape, index.shape)
    ? src
    : src.view(index.shape, src.strides, src.offset);
  const out = scatterInto(op, x, x.shape, x.dtype, ax, index, srcBlock);
  if (srcBlock !== src) srcBlock.dispose();
  return record(out, op, [x, index, src], (g, needs, [index]) => {
    let dsrc: Tensor | null = null;
    if (needs[2]) {
      const picked = gatherRaw(op, g, ax, index);
      if (sameShape(picked.shape, src.shape)) dsrc = picked;
      else {
        dsrc = Tensor.empty(src.shape, g.dtype);
        fillInPlace(dsrc, 0);
        const window = dsrc.view(index.shape, dsrc.strides, 0);
        copyInto(picked, window);
        window.dispose();
        picked.dispose();
      }
    }
    return [needs[0] ? g : null, null, dsrc];
  }, [index]);
}

/**
 * Out-of-place torch `index_add`: returns a copy of x with `src` added along `axis` at the
 * positions of the 1-D i32 `index` (src has x's shape with `index.size` on `axis`).
 * Repeated positions are summed (atomically: see the module doc); negative positions count
 * from the end, others out of range are an error at the next readback. dtypes: f32, f16 (accumulated in f32), i32.
 * Backward: dx = g, dsrc = indexSelect(g, axis, index).
 *
 * @example Add rows at positions (repeats add up)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.zeros([3, 2]);
 * const at = mg.tensor([0, 2, 0], { dtype: "i32" });
 * const src = mg.tensor([[1, 1], [2, 2], [3, 3]]);
 * console.log(await mg.indexAdd(x, 0, at, src).toArray()); // [[4, 4], [0, 0], [2, 2]]
 * ```
 */
export function indexAdd(x: Tensor, axis: number, index: Tensor, src: Tensor): Tensor {
  const op = "indexAdd";
  checkTensor(op, x, "x");
  checkIndex(op, index);
  checkTensor(op, src, "src");
  checkRank1(op, x, "x");
  checkAddable(op, x, src);
  if (index.rank !== 1) {
    throw new MoongradError(op, `index must be 1-D, got shape ${fmtShape(index.shape)}`);
  }
  const ax = normalizeAxis(op, axis, x.rank);
  const want = [...x.shape];
  want[ax] = index.shape[0];
  if (!sameShape(src.shape, want)) {
    throw new MoongradError(
      op,
      `src shape ${fmtShape(src.shape)} must be ${fmtShape(want)} (x ${
        fmtShape(x.shape)
      } with index length ${index.shape[0]} on axis ${ax})`,
    );
  }
  checkIndexRange(op, "index", index, -x.shape[ax], x.shape[ax]);
  const out = indexAddSorted(x, x.shape, x.dtype, ax, index, src);
  return record(out, op, [x, index, src], (g, needs, [index]) => {
    let dsrc: Tensor | null = null;
    if (needs[2]) {
      const gi = spreadIndex(index, want, ax);
      dsrc = gatherRaw(op, g, ax, gi);
      gi.dispose();
    }
    return [needs[0] ? g : null, null, dsrc];
  }, [index]);
}

// ---- topk -------------------------------------------------------------------------------

const TOPK_WG = 128;

/**
 * The `k` largest entries along the last axis (torch `topk` with sorted = true): `values`
 * (x's dtype) and `indices` (i32), both of shape `[...x.shape[:-1], k]`, largest first; equal
 * values keep the lower index first. NaN ranks above +Infinity (as in PyTorch) and -0 equals
 * +0. `k` must be an integer in 1..n (n = the last axis). x: f32, f16 or i32, rank >= 1.
 *
 * One workgroup per row repeats a selection k times: each round finds, with a shared-memory
 * tree reduction, the best element strictly after the previous pick in the total order
 * (value descending, index ascending) of order-preserving u32 keys. Cost O(k·n/128 + k·log 128)
 * per row: meant for small k (MoE routing, sampling), rows up to a few thousand.
 * Backward: the gradient flows to the selected positions (a scatter into zeros).
 *
 * @example The top-2 experts of each token
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const scores = mg.tensor([[0.1, 0.7, 0.2, 0.9], [0.5, 0.5, 0.1, 0.0]]);
 * const { values, indices } = mg.topk(scores, 2);
 * console.log(await indices.toArray()); // [[3, 1], [0, 1]]
 * console.log(await values.toArray()); // [[0.9, 0.7], [0.5, 0.5]] (to f32 precision)
 * ```
 */
export function topk(x: Tensor, k: number): { values: Tensor; indices: Tensor } {
  const op = "topk";
  checkTensor(op, x, "x");
  checkRank1(op, x, "x");
  if (x.dtype === "bool") {
    throw new MoongradError(op, `x must be f32, f16 or i32, got bool ${fmtShape(x.shape)}`);
  }
  const n = x.shape[x.rank - 1];
  if (!Number.isInteger(k) || k < 1 || k > n) {
    throw new MoongradError(
      op,
      `k must be an integer in 1..${n} (the last axis of x ${fmtShape(x.shape)}), got ${k}`,
    );
  }
  const outShape = [...x.shape.slice(0, -1), k];
  const values = Tensor.empty(outShape, x.dtype);
  const indices = Tensor.empty(outShape, "i32");
  const rows = x.size / n;
  if (rows > 0) {
    const src = x.isContiguous ? x : noGrad(() => contiguous(x));
    const t = wgslType(x.dtype);
    const key = isFloat(x.dtype)
      ? `float_key(f32(x[base + j]))`
      : `bitcast<u32>(x[base + j]) ^ 0x80000000u`;
    const kern = kernel({
      name: "topk",
      bindings: [
        { name: "x", type: t, access: "read" },
        { name: "vals", type: t, access: "read_write" },
        { name: "inds", type: "i32", access: "read_write" },
      ],
      workgroupSize: [TOPK_WG],
      params: TOPK,
      prelude: `
var<workgroup> sk: array<u32, ${TOPK_WG}>;
var<workgroup> si: array<u32, ${TOPK_WG}>;
// Order-preserving map of f32 to u32: NaN above +Inf, -0 equal to +0.
fn float_key(v: f32) -> u32 {
  if (mg_isnan(v)) { return 0xffffffffu; }
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
// True when (ka, ia) comes before (kb, ib): larger key first, then lower index.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}`,
      body: `
  let row = wid.y * nwg.x + wid.x;
  if (row >= p_rows()) { return; }
  let n = p_n();
  let k = p_k();
  let base = p_offset() + row * n;
  var pk = 0u;
  var pi = 0u;
  for (var t = 0u; t < k; t++) {
    var bk = 0u;
    var bi = 0xffffffffu;
    for (var j = lidx; j < n; j += ${TOPK_WG}u) {
      let kj = ${key};
      let after = t == 0u || before(pk, pi, kj, j);
      if (after && before(kj, j, bk, bi)) { bk = kj; bi = j; }
    }
    sk[lidx] = bk;
    si[lidx] = bi;
    workgroupBarrier();
    for (var s = ${TOPK_WG / 2}u; s > 0u; s >>= 1u) {
      if (lidx < s && before(sk[lidx + s], si[lidx + s], sk[lidx], si[lidx])) {
        sk[lidx] = sk[lidx + s];
        si[lidx] = si[lidx + s];
      }
      workgroupBarrier();
    }
    pk = sk[0];
    pi = si[0];
    workgroupBarrier();
    if (lidx == 0u) {
      vals[row * k + t] = x[base + pi];
      inds[row * k + t] = i32(pi);
    }
  }`,
    });
    const words = TOPK.pack({ rows, n, k, offset: src.offset });
    const [gx, gy] = grid1d(rows, 1);
    dispatch(
      kern,
      [src.storage(op).buf, values.storage(op).buf, indices.storage(op).buf],
      words,
      [gx, gy],
    );
    if (src !== x) src.dispose();
  }
  record(values, op, [x], (g, _needs, [indices]) => {
    return [scatterInto(op, null, x.shape, x.dtype, x.rank - 1, indices, g)];
  }, [indices]);
  return { values, indices };
}
