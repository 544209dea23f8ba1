/**
 * Deterministic index-add along one axis: the positions of a 1-D index are grouped by target
 * row with the stable counting sort of ops/bucket_sort.ts, then one thread per output element
 * adds its rows of `src` in index order. Same bits on every run (unlike float atomics), for
 * the cost of one sort; used by `indexAdd` and the backward of `indexSelect` / `embedding`.
 *
 * Small problems skip the sort: when (outputs × index length) ≤ SCAN_WORK, one thread per
 * output element scans the whole index and adds, in index order, the rows whose wrapped
 * index is its row: the same terms in the same order as the sorted path (bit-identical), in
 * one dispatch instead of six (wrap, histogram, scan, place, add; the tiny-K2 embedding
 * gradient: 256 × 128 outputs × 256 ids).
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { noGrad } from "../core/autograd.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { bucketSort } from "./bucket_sort.ts";
import { contiguous } from "./elementwise.ts";
import { grid1d, linearId } from "./grid.ts";
import { pointwise } from "./pointwise.ts";

const WG = 256;
/** Most outputs × index entries the one-dispatch scan takes (2^26 ≈ 67M index reads). */
const SCAN_WORK = 2 ** 26;

/** The scan: outputs, rows (m), index length (n), inner size, offsets of src, base, index. */
const INDEX_ADD_SCAN = params("index_add_scan", {
  total: "u32",
  m: "u32",
  n: "u32",
  inner: "u32",
  srcOffset: "u32",
  baseOffset: "u32",
  indexOffset: "u32",
});

/**
 * Outputs (outer · m · inner), rows of the output (m) and of src (n), the inner size, and
 * the element offsets of src and base.
 */
const INDEX_ADD_SORTED = params("index_add_sorted", {
  total: "u32",
  m: "u32",
  n: "u32",
  inner: "u32",
  srcOffset: "u32",
  baseOffset: "u32",
});

/**
 * out = base + Σ_j src[..., j, ...] added at row index[j] of `axis` (base = zeros when null).
 * `index` is 1-D i32 of length src.shape[axis]; negative entries count from the end and
 * entries outside −M..M−1 are dropped. The result has `shape` and `dtype`; f16 sums in f32.
 */
export function indexAddSorted(
  base: Tensor | null,
  shape: readonly number[],
  dtype: DType,
  axis: number,
  index: Tensor,
  src: Tensor,
): Tensor {
  return noGrad(() => {
    const M = shape[axis];
    const N = index.shape[0];
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const out = Tensor.empty(shape, dtype);
    const total = outer * M * inner;
    if (total === 0) return out;
    if (total * N <= SCAN_WORK) return scan(base, out, M, N, inner, index, src);
    const keys = pointwise(
      "index_wrap",
      [index, { scalar: M, dtype: "i32" }],
      index.shape,
      "i32",
      "select(v0, v0 + v1, v0 < 0)",
    );
    const sorted = bucketSort(keys, M);
    keys.dispose();
    const s = src.isContiguous ? src : contiguous(src);
    const b = base === null ? null : base.isContiguous ? base : contiguous(base);
    const t = wgslType(dtype);
    const acc = isFloat(dtype) ? "f32" : "i32";
    const bindings = [
      { name: "offsets", type: "i32", access: "read" as const },
      { name: "perm", type: "i32", access: "read" as const },
      { name: "src", type: t, access: "read" as const },
      ...(b ? [{ name: "base", type: t, access: "read" as const }] : []),
      { name: "out", type: t, access: "read_write" as const },
    ];
    const k = kernel({
      name: "index_add_sorted",
      bindings,
      workgroupSize: [WG],
      params: INDEX_ADD_SORTED,
      body: `
  let t = ${linearId(WG)};
  if (t >= p_total()) { return; }
  let m = p_m();
  let n = p_n();
  let inner = p_inner();
  let i = t % inner;
  let v = (t / inner) % m;
  let o = t / (inner * m);
  var sum = ${b ? `${acc}(base[p_baseOffset() + t])` : `${acc}(0)`};
  let end = u32(offsets[v + 1u]);
  for (var j = u32(offsets[v]); j < end; j++) {
    let r = u32(perm[j]);
    sum += ${acc}(src[p_srcOffset() + (o * n + r) * inner + i]);
  }
  out[t] = ${t}(sum);`,
    });
    const bufs = [sorted.offsets, sorted.perm, s, ...(b ? [b] : []), out].map((x) =>
      x.storage("indexAdd").buf
    );
    const words = INDEX_ADD_SORTED.pack({
      total,
      m: M,
      n: N,
      inner,
      srcOffset: s.offset,
      baseOffset: b ? b.offset : 0,
    });
    dispatch(k, bufs, words, grid1d(total, WG));
    for (const x of [sorted.counts, sorted.offsets, sorted.perm, sorted.inv]) x.dispose();
    if (s !== src) s.dispose();
    if (b && b !== base) b.dispose();
    return out;
  });
}

/** `indexAddSorted` by one scan of the index per output element (see the module doc). */
function scan(
  base: Tensor | null,
  out: Tensor,
  M: number,
  N: number,
  inner: number,
  index: Tensor,
  src: Tensor,
): Tensor {
  const dtype = out.dtype;
  const total = out.size;
  const s = src.isContiguous ? src : contiguous(src);
  const b = base === null ? null : base.isContiguous ? base : contiguous(base);
  const ix = index.isContiguous ? index : contiguous(index);
  const t = wgslType(dtype);
  const acc = isFloat(dtype) ? "f32" : "i32";
  const bindings = [
    { name: "index", type: "i32", access: "read" as const },
    { name: "src", type: t, access: "read" as const },
    ...(b ? [{ name: "base", type: t, access: "read" as const }] : []),
    { name: "out", type: t, access: "read_write" as const },
  ];
  const k = kernel({
    name: "index_add_scan",
    bindings,
    workgroupSize: [WG],
    params: INDEX_ADD_SCAN,
    body: `
  let t = ${linearId(WG)};
  if (t >= p_total()) { return; }
  let m = p_m();
  let n = p_n();
  let inner = p_inner();
  let i = t % inner;
  let v = i32((t / inner) % m);
  let o = t / (inner * m);
  var sum = ${b ? `${acc}(base[p_baseOffset() + t])` : `${acc}(0)`};
  for (var r = 0u; r < n; r++) {
    var w = index[p_indexOffset() + r];
    if (w < 0) { w += i32(m); }
    if (w == v) { sum += ${acc}(src[p_srcOffset() + (o * n + r) * inner + i]); }
  }
  out[t] = ${t}(sum);`,
  });
  const bufs = [ix, s, ...(b ? [b] : []), out].map((x) => x.storage("indexAdd").buf);
  const words = INDEX_ADD_SCAN.pack({
    total,
    m: M,
    n: N,
    inner,
    srcOffset: s.offset,
    baseOffset: b ? b.offset : 0,
    indexOffset: ix.offset,
  });
  dispatch(k, bufs, words, grid1d(total, WG));
  if (s !== src) s.dispose();
  if (b && b !== base) b.dispose();
  if (ix !== index) ix.dispose();
  return out;
}
