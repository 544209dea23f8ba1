/**
 * Float64 references for the indexing ops, with the conventions of ops/indexing.ts: an index
 * j on an axis of length n is valid for -n <= j < n (negative counts from the end); reads at
 * invalid indices give 0 and writes at invalid indices are dropped.
 */
import { NDArray, ravel, size, unravel } from "./ndarray.ts";

/** The position index `j` names on an axis of length `n`, or -1 when out of range. */
export function resolveIndex(j: number, n: number): number {
  if (j < -n || j >= n) return -1;
  return j < 0 ? j + n : j;
}

/** torch.gather: out[c] = x[c with c[axis] = index[c]] over index's shape (0 when invalid). */
export function gatherRef(x: NDArray, axis: number, index: NDArray): NDArray {
  const out = new Float64Array(index.size);
  for (let i = 0; i < index.size; i++) {
    const c = unravel(i, index.shape);
    const j = resolveIndex(index.data[i], x.shape[axis]);
    if (j < 0) continue;
    c[axis] = j;
    out[i] = x.data[ravel(c, x.shape)];
  }
  return new NDArray(out, index.shape);
}

/** torch.scatter_add (out-of-place): x plus src[c] at c with c[axis] = index[c]. */
export function scatterAddRef(x: NDArray, axis: number, index: NDArray, src: NDArray): NDArray {
  const out = new Float64Array(x.data);
  for (let i = 0; i < index.size; i++) {
    const c = unravel(i, index.shape);
    const v = src.data[ravel(c, src.shape)];
    const j = resolveIndex(index.data[i], x.shape[axis]);
    if (j < 0) continue;
    c[axis] = j;
    out[ravel(c, x.shape)] += v;
  }
  return new NDArray(out, x.shape);
}

/** `index` (1-D values) spread to `shape`: element c holds index[c[axis]]. */
export function spreadIndexRef(index: readonly number[], shape: readonly number[], axis: number) {
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) out[i] = index[unravel(i, shape)[axis]];
  return new NDArray(out, shape);
}

/** torch.index_select. */
export function indexSelectRef(x: NDArray, axis: number, index: readonly number[]): NDArray {
  const shape = [...x.shape];
  shape[axis] = index.length;
  return gatherRef(x, axis, spreadIndexRef(index, shape, axis));
}

/** torch.index_add (out-of-place). */
export function indexAddRef(
  x: NDArray,
  axis: number,
  index: readonly number[],
  src: NDArray,
): NDArray {
  return scatterAddRef(x, axis, spreadIndexRef(index, src.shape, axis), src);
}

/** Embedding lookup: weight [V, D], ids of any shape -> [...ids.shape, D]. */
export function embeddingRef(weight: NDArray, ids: NDArray): NDArray {
  const rows = indexSelectRef(weight, 0, Array.from(ids.data));
  return new NDArray(rows.data, [...ids.shape, weight.shape[1]]);
}

function zeros(shape: readonly number[]): NDArray {
  return new NDArray(new Float64Array(size(shape)), shape);
}

/** vjp of gather with respect to x. */
export function gatherVjp(g: NDArray, xShape: readonly number[], axis: number, index: NDArray) {
  return scatterAddRef(zeros(xShape), axis, index, g);
}

/** vjp of indexSelect with respect to x. */
export function indexSelectVjp(
  g: NDArray,
  xShape: readonly number[],
  axis: number,
  index: readonly number[],
): NDArray {
  return indexAddRef(zeros(xShape), axis, index, g);
}

/** vjp of embedding with respect to weight. */
export function embeddingVjp(g: NDArray, weightShape: readonly number[], ids: NDArray): NDArray {
  const rows = new NDArray(g.data, [ids.size, weightShape[1]]);
  return indexSelectVjp(rows, weightShape, 0, Array.from(ids.data));
}

/** vjp of scatterAdd: dx = g, dsrc = gather(g) on index's block of src, 0 elsewhere. */
export function scatterAddVjp(
  g: NDArray,
  axis: number,
  index: NDArray,
  srcShape: readonly number[],
): { dx: NDArray; dsrc: NDArray } {
  const picked = gatherRef(g, axis, index);
  const dsrc = zeros(srcShape);
  for (let i = 0; i < picked.size; i++) {
    dsrc.data[ravel(unravel(i, index.shape), srcShape)] = picked.data[i];
  }
  return { dx: g, dsrc };
}

/** vjp of indexAdd: dx = g, dsrc = indexSelect(g). */
export function indexAddVjp(
  g: NDArray,
  axis: number,
  index: readonly number[],
): { dx: NDArray; dsrc: NDArray } {
  return { dx: g, dsrc: indexSelectRef(g, axis, index) };
}

/** Sort key of topk: NaN largest, -0 equal to +0. */
function rankValue(v: number): number {
  return Number.isNaN(v) ? Infinity : v;
}

/** torch.topk along the last axis: largest first, ties by lower index, NaN above +Inf. */
export function topkRef(x: NDArray, k: number): { values: NDArray; indices: NDArray } {
  const n = x.shape[x.rank - 1];
  const rows = x.size / n;
  const shape = [...x.shape.slice(0, -1), k];
  const values = new Float64Array(rows * k);
  const indices = new Float64Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const order = [...Array(n).keys()].sort((a, b) => {
      const va = x.data[r * n + a];
      const vb = x.data[r * n + b];
      const na = Number.isNaN(va);
      const nb = Number.isNaN(vb);
      if (na !== nb) return na ? -1 : 1;
      const d = rankValue(vb) - rankValue(va);
      return na || d === 0 || Number.isNaN(d) ? a - b : d;
    });
    for (let t = 0; t < k; t++) {
      values[r * k + t] = x.data[r * n + order[t]];
      indices[r * k + t] = order[t];
    }
  }
  return { values: new NDArray(values, shape), indices: new NDArray(indices, shape) };
}

/** vjp of topk: g scattered to the selected positions of zeros. */
export function topkVjp(g: NDArray, xShape: readonly number[], indices: NDArray): NDArray {
  return scatterAddRef(zeros(xShape), xShape.length - 1, indices, g);
}
