/**
 * The gradient a fused vjp may fold into its own kernel (core/autograd.ts `GradPriors`): a
 * vjp whose kernel can write prior + its own gradient in an epilogue asks here for the
 * prior of one input and gets it only when the kernel can read it as is — contiguous (any
 * offset), shaped and typed like the gradient it writes, and not the storage of another
 * tensor the same dispatch reads (a shared sub-buffer would cost the runtime an alias copy,
 * one dispatch, the very one the fusion saves). The epilogue computes `prior + own` in f32
 * and rounds once to the dtype, as `add` does, so the result is bit-identical to the unfused
 * `add(prior, own)`; the prior is only read (it may share storage with other live gradients).
 */
import type { GradPriors } from "../core/autograd.ts";
import type { DType } from "../core/dtype.ts";
import { sameShape } from "../core/shape.ts";
import type { Tensor } from "../core/tensor.ts";

/**
 * Input j's prior gradient when a kernel writing a contiguous `shape` × `dtype` result can
 * read it directly (see the file header), else null. `reads`: the tensors the kernel reads.
 * The caller calls `priors.absorb(j)` once its kernel has folded the prior in.
 */
export function usablePrior(
  priors: GradPriors | undefined,
  j: number,
  shape: readonly number[],
  dtype: DType,
  ...reads: Tensor[]
): Tensor | null {
  const p = priors?.prior(j) ?? null;
  if (!p || p.dtype !== dtype || !p.isContiguous || !sameShape(p.shape, shape)) return null;
  const buf = p.storage("grad").buf;
  return reads.some((t) => t.storage("grad").buf === buf) ? null : p;
}
