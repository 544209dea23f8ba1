/**
 * The pointwise kernel generator: any number of strided, broadcast tensor inputs or scalar
 * parameters, one contiguous output, and a WGSL expression over the loaded values. Shapes,
 * strides and offsets travel as parameters, so one pipeline serves every shape of a rank-
 * independent op; only dtypes, contiguity and the expression change the source.
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { MoongradError } from "../core/errors.ts";
import { type Binding, kernel, Params } from "../core/kernel.ts";
import type { GpuBuf } from "../core/pool.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** One input of a pointwise op: a tensor view or a scalar of the given dtype. */
export type PointwiseInput = Tensor | { scalar: number; dtype: DType };

/** WGSL type values of `dtype` are computed in: f32 for floats, i32 and u32 otherwise. */
export function computeType(dtype: DType): string {
  return isFloat(dtype) ? "f32" : wgslType(dtype);
}

/**
 * Runs `expr` (WGSL over v0, v1, ... in their compute types, yielding the compute type of
 * `outDtype`) at every element of `outShape`. Inputs must already broadcast to `outShape`
 * (their shapes are right-aligned; missing or size-1 axes broadcast).
 */
export function pointwise(
  name: string,
  inputs: readonly PointwiseInput[],
  outShape: readonly number[],
  outDtype: DType,
  expr: string,
  prelude = "",
): Tensor {
  const out = Tensor.empty(outShape, outDtype);
  const n = out.size;
  if (n === 0) return out;
  const rank = outShape.length;
  const tensors = inputs.filter((x): x is Tensor => x instanceof Tensor);
  // One binding per distinct storage buffer and type (x.mul(x), views of one tensor): all
  // bindings are read_write (core/kernel.ts), and one sub-buffer bound twice would be two
  // overlapping writable ranges. Offsets and strides stay per input.
  const bound: { buf: GpuBuf; type: string }[] = [];
  const slot = tensors.map((x) => {
    const buf = x.storage(name).buf, type = wgslType(x.dtype);
    const at = bound.findIndex((b) => b.buf === buf && b.type === type);
    return at >= 0 ? at : bound.push({ buf, type }) - 1;
  });
  const bindings: Binding[] = bound.map((b, i) => ({
    name: `in${i}`,
    type: b.type,
    access: "read",
  }));
  bindings.push({ name: "out", type: wgslType(outDtype), access: "read_write" });
  // Parameter words: n, rank, shape[rank], then per tensor input strides[rank] + offset,
  // then one word per scalar input.
  const p = new Params().u(n, rank, ...outShape);
  const loads: string[] = [];
  // Scalar words go after every tensor's strides, whatever the order of the inputs.
  const scalars: ((q: Params) => void)[] = [];
  let t = 0;
  let s = 0;
  inputs.forEach((x, j) => {
    const ct = computeType(x instanceof Tensor ? x.dtype : x.dtype);
    if (x instanceof Tensor) {
      const strides = alignedStrides(name, x, outShape);
      const isDense = x.isContiguous && x.size === n;
      const base = `2u + rank + ${t}u * (rank + 1u)`;
      p.u(...strides, x.offset);
      const idx = isDense ? `i + prm(${base} + rank)` : `strided(i, ${base})`;
      loads.push(`let v${j} = ${ct}(in${slot[t]}[${idx}]);`);
      t++;
    } else {
      const word = `prm(2u + rank + ${tensors.length}u * (rank + 1u) + ${s}u)`;
      const conv = ct === "f32"
        ? `bitcast<f32>(${word})`
        : ct === "i32"
        ? `bitcast<i32>(${word})`
        : word;
      const v = x.scalar;
      if (ct === "f32") scalars.push((q) => q.f(v));
      else if (ct === "i32") scalars.push((q) => q.i(v));
      else scalars.push((q) => q.u(v ? 1 : 0));
      loads.push(`let v${j} = ${conv};`);
      s++;
    }
  });
  for (const push of scalars) push(p);
  const stridedFn = `
fn strided(i: u32, base: u32) -> u32 {
  let rank = prm(1u);
  var rem = i;
  var off = prm(base + rank);
  for (var d = i32(rank) - 1; d >= 0; d--) {
    let dim = prm(2u + u32(d));
    off += (rem % dim) * prm(base + u32(d));
    rem /= dim;
  }
  return off;
}`;
  const body = `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let rank = prm(1u);
  ${loads.join("\n  ")}
  out[i] = ${wgslType(outDtype)}(${expr});`;
  const k = kernel({
    name,
    bindings,
    workgroupSize: [WG],
    prelude: stridedFn + prelude,
    body,
  });
  dispatch(k, [...bound.map((b) => b.buf), out.storage(name).buf], p.words, [
    ...grid1d(n, WG),
  ]);
  return out;
}

/** Strides of `x` right-aligned to `outShape`, with 0 on broadcast axes. */
function alignedStrides(op: string, x: Tensor, outShape: readonly number[]): number[] {
  const rank = outShape.length;
  const lead = rank - x.rank;
  if (lead < 0) {
    throw new MoongradError(op, `input rank ${x.rank} exceeds output rank ${rank}`);
  }
  return outShape.map((d, i) => {
    if (i < lead) return 0;
    const xd = x.shape[i - lead];
    if (xd === d) return xd === 1 ? 0 : x.strides[i - lead];
    if (xd === 1) return 0;
    throw new MoongradError(op, `input shape [${x.shape}] does not broadcast to [${outShape}]`);
  });
}
