/**
 * The pointwise kernel generator: any number of strided, broadcast tensor inputs or scalar
 * parameters, one contiguous output, and a WGSL expression over the loaded values. Shapes,
 * strides and offsets travel as parameters, so one pipeline serves every shape of a rank-
 * independent op; only dtypes, contiguity and the expression change the source.
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, kernel } from "../core/kernel.ts";
import { fitLength, params } from "../core/params.ts";
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
  // Parameters: n, rank, shape, each tensor input's strides (R words each, R the largest rank
  // that fits) and offset, then one word per scalar input. R depends only on the counts of
  // inputs, so one pipeline serves every rank up to R.
  const T = tensors.length;
  const scalarDecl: Record<string, "u32" | "i32" | "f32"> = {};
  const scalarValues: Record<string, number> = {};
  const R = fitLength(2 + Math.max(T, 1) + inputs.length - T, T + 1);
  const strides: number[] = new Array(T * R).fill(0);
  const offsets: number[] = [];
  const loads: string[] = [];
  let t = 0;
  inputs.forEach((x, j) => {
    const ct = computeType(x.dtype);
    if (x instanceof Tensor) {
      alignedStrides(name, x, outShape).forEach((s, d) => (strides[t * R + d] = s));
      offsets.push(x.offset);
      const isDense = x.isContiguous && x.size === n;
      const idx = isDense ? `i + p_offsets(${t}u)` : `strided(i, ${t}u)`;
      loads.push(`let v${j} = ${ct}(in${slot[t]}[${idx}]);`);
      t++;
    } else {
      const kind = ct === "f32" || ct === "i32" ? ct : "u32";
      scalarDecl[`s${j}`] = kind;
      const v = x.scalar;
      scalarValues[`s${j}`] = kind === "u32" ? (v ? 1 : 0) : kind === "i32" ? Math.trunc(v) : v;
      loads.push(`let v${j} = p_s${j}();`);
    }
  });
  if (rank > R) {
    throw new MoongradError(
      name,
      `output ${
        fmtShape(outShape)
      } has rank ${rank}; with ${T} tensor inputs at most ${R} is supported`,
    );
  }
  const P = params(name, {
    n: "u32",
    rank: "u32",
    shape: ["u32", R],
    strides: ["u32", Math.max(T * R, 1)],
    offsets: ["u32", Math.max(T, 1)],
    ...scalarDecl,
  });
  const words = P.pack({ n, rank, shape: outShape, strides, offsets, ...scalarValues });
  const stridedFn = `
fn strided(i: u32, t: u32) -> u32 {
  let rank = p_rank();
  var rem = i;
  var off = p_offsets(t);
  for (var d = i32(rank) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    off += (rem % dim) * p_strides(t * ${R}u + u32(d));
    rem /= dim;
  }
  return off;
}`;
  const body = `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  ${loads.join("\n  ")}
  out[i] = ${wgslType(outDtype)}(${expr});`;
  const k = kernel({
    name,
    bindings,
    workgroupSize: [WG],
    params: P,
    prelude: stridedFn + prelude,
    body,
  });
  dispatch(k, [...bound.map((b) => b.buf), out.storage(name).buf], words, [
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
