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
    if (out.size * N <= SCAN_WORK) {
      // Every output thread scans the index for its row, in index order.
      const ix = index.isContiguous ? index : contiguous(index);
      addRows(
        base,
        out,
        M,
        N,
        inner,
        src,
        "scan",
        [ix],
        `
  for (var r = 0u; r < n; r++) {
    var w = index[p_indexOffset() + r];
    if (w < 0) { w += i32(m); }
    if (w == i32(v)) { sum += ADD(r); }
  }`,
        ix.offset,
      );
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
    addRows(
      base,
      out,
      M,
      N,
      inner,
      src,
      "sorted",
      [sorted.offsets, sorted.perm],
      `
  let end = u32(offsets[v + 1u]);
  for (var j = u32(offsets[v]); j < end; j++) { sum += ADD(u32(perm[j])); }`,
      0,
    );
    for (const x of [sorted.counts, sorted.offsets, sorted.perm, sorted.inv]) x.dispose();
    return out;
  });
}

/**
 * Records one thread per element of `out`: sum = base (or 0), then `loop`, which reads the
 * extra i32 bindings (`index`, or `offsets` and `perm`) and adds source row r with `ADD(r)`.
 */
function addRows(
  base: Tensor | null,
  out: Tensor,
  M: number,
  N: number,
  inner: number,
  src: Tensor,
  kind: "scan" | "sorted",
  extra: Tensor[],
  loop: string,
  indexOffset: number,
): void {
  const dtype = out.dtype;
  const s = src.isContiguous ? src : contiguous(src);
  const b = base === null ? null : base.isContiguous ? base : contiguous(base);
  const t = wgslType(dtype);
  const acc = isFloat(dtype) ? "f32" : "i32";
  const extraNames = extra.length === 1 ? ["index"] : ["offsets", "perm"];
  const bindings = [
    ...extraNames.map((name) => ({ name, type: "i32", access: "read" as const })),
    { name: "src", type: t, access: "read" as const },
    ...(b ? [{ name: "base", type: t, access: "read" as const }] : []),
    { name: "out", type: t, access: "read_write" as const },
  ];
  const k = kernel({
    name: `index_add_${kind}`,
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
  var sum = ${b ? `${acc}(base[p_baseOffset() + t])` : `${acc}(0)`};${
      loop.replace(/ADD\(([^;]*)\);/g, `${acc}(src[p_srcOffset() + (o * n + $1) * inner + i]);`)
    }
  out[t] = ${t}(sum);`,
  });
  const bufs = [...extra, s, ...(b ? [b] : []), out].map((x) => x.storage("indexAdd").buf);
  const words = INDEX_ADD.pack({
    total: out.size,
    m: M,
    n: N,
    inner,
    srcOffset: s.offset,
    baseOffset: b ? b.offset : 0,
    indexOffset,
  });
  dispatch(k, bufs, words, grid1d(out.size, WG));
  if (s !== src) s.dispose();
  if (b && b !== base) b.dispose();
}
