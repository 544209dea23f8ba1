/**
 * Deterministic index-add along one axis: the positions of a 1-D index are grouped by target
 * row with the stable counting sort of ops/bucket_sort.ts, then one thread per output element
 * adds its rows of `src` in index order. Same bits on every run (unlike float atomics), for
 * the cost of one sort; used by `indexAdd` and the backward of `indexSelect` / `embedding`.
 *
 * Small problems skip the sort: when (outputs × index length) ≤ SCAN_WORK and the index has at
 * most MASK_MOST entries, one workgroup per output row (outer, v) first marks, in a bit mask
 * in workgroup memory, the index entries whose wrapped value is v (one thread per entry, an
 * atomic OR), then each thread sums its elements of the row over the marked source rows, in
 * index order (lowest bit first): the same terms in the same order as the sorted path
 * (bit-identical), in one dispatch instead of six (wrap, histogram, scan, place, add). The
 * tiny-K2 embedding gradient (256 × 128 outputs, 256 ids) took 16.8 ms on lavapipe when every
 * output thread read the whole index; with the mask each row reads the index once per row
 * instead of once per element.
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
/** Threads per row of the one-dispatch masked path. */
const ROW_WG = 64;
/** Most outputs × index entries the one-dispatch path takes. */
const SCAN_WORK = 2 ** 26;
/** Most index entries of the one-dispatch path: its mask (one bit each) is 8 KiB. */
const MASK_MOST = 65536;

/**
 * Outputs (outer · m · inner), rows of the output (m) and of src (n), the inner size, and
 * the element offsets of src, base and (the scan) the index.
 */
const INDEX_ADD = params("index_add", {
  total: "u32",
  m: "u32",
  n: "u32",
  inner: "u32",
  srcOffset: "u32",
  baseOffset: "u32",
  indexOffset: "u32",
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
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const out = Tensor.empty(shape, dtype);
    if (out.size === 0) return out;
    if (out.size * N <= SCAN_WORK && N <= MASK_MOST) {
      const ix = index.isContiguous ? index : contiguous(index);
      addMaskedRows(base, out, M, N, inner, src, ix);
      if (ix !== index) ix.dispose();
      return out;
    }
    const keys = pointwise(
      "index_wrap",
      [index, { scalar: M, dtype: "i32" }],
      index.shape,
      "i32",
      "select(v0, v0 + v1, v0 < 0)",
    );
    const sorted = bucketSort(keys, M);
    keys.dispose();
    // Every output thread adds the rows the sort grouped under its row, in index order.
    addSortedRows(base, out, M, N, inner, src, sorted.offsets, sorted.perm);
    for (const x of [sorted.counts, sorted.offsets, sorted.perm, sorted.inv]) x.dispose();
    return out;
  });
}

/**
 * One workgroup per output row: marks the index entries that point at the row in a bit mask
 * (workgroup memory), then each thread sums its elements over the marked source rows in index
 * order, onto base (or 0).
 */
function addMaskedRows(
  base: Tensor | null,
  out: Tensor,
  M: number,
  N: number,
  inner: number,
  src: Tensor,
  index: Tensor,
): void {
  const rows = out.size / inner;
  // Mask words rounded up to a power of two (≥ 8), so a few pipelines cover every length.
  const words = Math.max(8, 2 ** Math.ceil(Math.log2(Math.ceil(N / 32))));
  const { s, b, t, acc, head } = operands(base, out, src);
  const k = kernel({
    name: "index_add_rows",
    bindings: [{ name: "index", type: "i32", access: "read" }, ...head],
    workgroupSize: [ROW_WG],
    params: INDEX_ADD,
    prelude: `var<workgroup> hits: array<atomic<u32>, ${words}>;`,
    body: `
  let row = wid.y * nwg.x + wid.x;
  let m = p_m();
  let n = p_n();
  let inner = p_inner();
  if (row >= p_total() / max(inner, 1u)) { return; }
  let v = row % m;
  let o = row / m;
  let used = (n + 31u) / 32u;
  for (var w = lidx; w < used; w += ${ROW_WG}u) { atomicStore(&hits[w], 0u); }
  workgroupBarrier();
  for (var r = lidx; r < n; r += ${ROW_WG}u) {
    var w = index[p_indexOffset() + r];
    if (w < 0) { w += i32(m); }
    if (w == i32(v)) { atomicOr(&hits[r / 32u], 1u << (r % 32u)); }
  }
  workgroupBarrier();
  for (var i = lidx; i < inner; i += ${ROW_WG}u) {
    let tt = row * inner + i;
    var sum = ${b ? `${acc}(base[p_baseOffset() + tt])` : `${acc}(0)`};
    for (var w = 0u; w < used; w++) {
      var bits = atomicLoad(&hits[w]);
      while (bits != 0u) {
        let r = w * 32u + firstTrailingBit(bits);
        bits &= bits - 1u;
        sum += ${acc}(src[p_srcOffset() + (o * n + r) * inner + i]);
      }
    }
    out[tt] = ${t}(sum);
  }`,
  });
  const bufs = [index, s, ...(b ? [b] : []), out].map((x) => x.storage("indexAdd").buf);
  dispatch(k, bufs, pack(out, M, N, inner, s, b, index.offset), grid1d(rows, 1));
  if (s !== src) s.dispose();
  if (b && b !== base) b.dispose();
}

/** The contiguous source and base, the element and accumulator types, and the common bindings. */
function operands(base: Tensor | null, out: Tensor, src: Tensor) {
  const s = src.isContiguous ? src : contiguous(src);
  const b = base === null ? null : base.isContiguous ? base : contiguous(base);
  const t = wgslType(out.dtype);
  const acc = isFloat(out.dtype) ? "f32" : "i32";
  const head = [
    { name: "src", type: t, access: "read" as const },
    ...(b ? [{ name: "base", type: t, access: "read" as const }] : []),
    { name: "out", type: t, access: "read_write" as const },
  ];
  return { s, b, t, acc, head };
}

/** The parameter words of both paths. */
function pack(
  out: Tensor,
  M: number,
  N: number,
  inner: number,
  s: Tensor,
  b: Tensor | null,
  indexOffset: number,
): Uint32Array {
  return INDEX_ADD.pack({
    total: out.size,
    m: M,
    n: N,
    inner,
    srcOffset: s.offset,
    baseOffset: b ? b.offset : 0,
    indexOffset,
  });
}

/**
 * The sorted path: one thread per element of `out`, sum = base (or 0), then the rows the sort
 * grouped under its row (`offsets`, `perm`), in index order.
 */
function addSortedRows(
  base: Tensor | null,
  out: Tensor,
  M: number,
  N: number,
  inner: number,
  src: Tensor,
  offsets: Tensor,
  perm: Tensor,
): void {
  const { s, b, t, acc, head } = operands(base, out, src);
  const bindings = [
    ...["offsets", "perm"].map((name) => ({ name, type: "i32", access: "read" as const })),
    ...head,
  ];
  const k = kernel({
    name: "index_add_sorted",
    bindings,
    workgroupSize: [WG],
    params: INDEX_ADD,
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
    sum += ${acc}(src[p_srcOffset() + (o * n + u32(perm[j])) * inner + i]);
  }
  out[t] = ${t}(sum);`,
  });
  const bufs = [offsets, perm, s, ...(b ? [b] : []), out].map((x) => x.storage("indexAdd").buf);
  dispatch(k, bufs, pack(out, M, N, inner, s, b, 0), grid1d(out.size, WG));
  if (s !== src) s.dispose();
  if (b && b !== base) b.dispose();
}
