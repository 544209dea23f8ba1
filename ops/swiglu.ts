/**
 * SwiGLU, the gate of DeepSeek / Kimi's MLPs and experts: y = silu(a) ⊙ b, fused.
 *
 * Forward: one pointwise pass over (a, b) instead of two (silu, then mul), with no silu(a)
 * intermediate. Backward: one thread per element over dense (g, a, b) (strided inputs are
 * made contiguous first; the model's never are) writing both gradients into one buffer
 * [2, ...shape] (the first half da = g·b·σ(a)·(1 + a·(1 − σ(a))), the second db = g·silu(a));
 * the two returned gradients are contiguous views of its halves. Three dispatches (silu_grad
 * and two muls) become one. Inputs may be any strided or broadcast views of equal shape
 * (no broadcasting between a and b: the MLP's two projections always match).
 * Measured on the tiny preset (4 × 64 tokens): 7 SwiGLUs per step, 21 dispatches saved.
 */
import { isFloat } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { record } from "../core/autograd.ts";
import { Tensor } from "../core/tensor.ts";
import { wgslType } from "../core/dtype.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import type { GpuBuf } from "../core/pool.ts";
import { dispatch } from "../core/runtime.ts";
import { contiguous, MATH_WGSL } from "./elementwise.ts";
import { grid1d, linearId } from "./grid.ts";
import { pointwise } from "./pointwise.ts";

const WG = 256;
/** swiglu_grad: elements per half and the offsets of g, a and b. */
const GRAD = params("swiglu_grad", { n: "u32", offsets: ["u32", 3] });

/**
 * silu(a) ⊙ b in one kernel (the SwiGLU of DeepSeek / Kimi MLPs), differentiable in both.
 *
 * @example The MLP gate
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([0, 1, -2]), b = mg.tensor([2, 2, 2]);
 * console.log(await mg.swiglu(a, b).toArray()); // [0, 1.462…, -0.476…] = silu(a)·b
 * ```
 */
export function swiglu(a: Tensor, b: Tensor): Tensor {
  for (const [name, t] of [["a", a], ["b", b]] as const) {
    if (!(t instanceof Tensor)) {
      throw new MoongradError("swiglu", `${name} must be a Tensor, got ${typeof t}`);
    }
    t.storage("swiglu");
  }
  if (
    !isFloat(a.dtype) || a.dtype !== b.dtype || a.rank !== b.rank ||
    a.shape.some((d, i) => d !== b.shape[i])
  ) {
    throw new MoongradError(
      "swiglu",
      `a ${a.dtype} ${fmtShape(a.shape)} and b ${b.dtype} ${
        fmtShape(b.shape)
      } must be float tensors of one dtype and shape`,
    );
  }
  const out = pointwise("swiglu", [a, b], a.shape, a.dtype, "v0 * mg_sigmoid(v0) * v1", MATH_WGSL);
  return record(out, "swiglu", [a, b], (g, _needs, [sa, sb]) => swigluGrad(g, sa, sb), [a, b]);
}

/** Both gradients in one pass over dense (g, a, b): da at [0, n), db at [n, 2n) of one buffer. */
function swigluGrad(g: Tensor, a: Tensor, b: Tensor): [Tensor, Tensor] {
  const n = g.size;
  const dense = (t: Tensor) => t.isContiguous ? t : contiguous(t);
  const [gc, ac, bc] = [dense(g), dense(a), dense(b)];
  const both = Tensor.empty([2, ...g.shape], g.dtype);
  if (n > 0) {
    const t = wgslType(g.dtype);
    // One binding per distinct buffer: all bindings are read_write (core/kernel.ts).
    const bufs: GpuBuf[] = [];
    const slot = [gc, ac, bc].map((x) => {
      const buf = x.storage("swiglu").buf;
      const at = bufs.indexOf(buf);
      return at >= 0 ? at : bufs.push(buf) - 1;
    });
    const k = kernel({
      name: "swiglu_grad",
      bindings: [
        ...bufs.map((_, i) => ({ name: `in${i}`, type: t, access: "read" as const })),
        { name: "out", type: t, access: "read_write" },
      ],
      workgroupSize: [WG],
      params: GRAD,
      prelude: MATH_WGSL,
      body: `
  let i = ${linearId(WG)};
  let n = p_n();
  if (i >= n) { return; }
  let g = f32(in${slot[0]}[p_offsets(0u) + i]);
  let a = f32(in${slot[1]}[p_offsets(1u) + i]);
  let b = f32(in${slot[2]}[p_offsets(2u) + i]);
  let s = mg_sigmoid(a);
  out[i] = ${t}(g * b * s * (1.0 + a * (1.0 - s)));
  out[n + i] = ${t}(g * a * s);`,
    });
    const words = GRAD.pack({ n, offsets: [gc.offset, ac.offset, bc.offset] });
    dispatch(k, [...bufs, both.storage("swiglu").buf], words, grid1d(n, WG));
  }
  for (const [x, c] of [[g, gc], [a, ac], [b, bc]]) if (c !== x) c.dispose();
  const da = both.view(g.shape, both.strides.slice(1), 0);
  const db = both.view(g.shape, both.strides.slice(1), n);
  both.dispose();
  return [da, db];
}
