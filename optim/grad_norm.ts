/**
 * Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_) and the global norm of a
 * step's parameter change.
 *
 * `clipGradNorm`: total = √(Σ_p ‖g_p‖²) over every gradient present (one f32 sum of squares
 * per tensor on the GPU, added there, one scalar read back); when total > maxNorm every
 * gradient is scaled in place by maxNorm / (total + 1e-6), as torch does; otherwise nothing
 * is touched (not even multiplied by 1). Returns the pre-clip total. Cost: one elementwise
 * square + reduction per parameter and one ~10 ms readback per call on CPU adapters (the
 * trainer needs the norm for its metrics anyway); the scaling is one multiply per parameter.
 *
 * `UpdateNorm`: copies the parameters before a step and returns √(Σ‖W_after − W_before‖²)
 * after it (update, weight decay and QK-Clip together); one copy of the parameters held
 * during the step.
 */
import { noGrad } from "../core/autograd.ts";
import { MoongradError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { scope } from "../core/scope.ts";
import { copyInto } from "../ops/copy.ts";
import { add, mul, sub } from "../ops/elementwise.ts";
import { zerosLike } from "../ops/creation.ts";
import { sum } from "../ops/reduce.ts";
import { namedParams, type ParamSource } from "./optimizer.ts";

/** √(Σ ‖t‖²) over `tensors`, as a kept f32 scalar tensor on the GPU (0 for none). */
function sumSquares(tensors: readonly Tensor[]): Tensor | null {
  if (tensors.length === 0) return null;
  return noGrad(() =>
    scope(() => {
      let acc: Tensor | null = null;
      for (const t of tensors) {
        const s = sum(mul(t, t));
        acc = acc === null ? s : add(acc, s);
      }
      return acc!;
    })
  ).keep();
}

/**
 * Global L2 norm of the tensors, read back (0 for an empty list).
 *
 * @example The norm of two gradients
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.optim.globalNorm([mg.tensor([3]), mg.tensor([4])])); // 5
 * ```
 */
export async function globalNorm(tensors: readonly Tensor[]): Promise<number> {
  const s = sumSquares(tensors);
  if (s === null) return 0;
  try {
    return Math.sqrt(await s.item());
  } finally {
    s.dispose();
  }
}

/**
 * Clips the global L2 norm of every gradient of `params` to `maxNorm` in place (like
 * torch.nn.utils.clip_grad_norm_) and returns the norm before clipping. Parameters without a
 * gradient are skipped; `maxNorm` = Infinity only measures.
 *
 * @example Clip before the optimizer step
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * mg.scope(() => lin.forward(mg.randn([2, 8], { seed: 1 })).square().sum().backward());
 * const before = await mg.optim.clipGradNorm(lin, 0.5);
 * console.log(before > 0.5, Math.abs(await mg.optim.globalNorm([lin.weight.grad!]) - 0.5) < 1e-4);
 * ```
 */
export async function clipGradNorm(params: ParamSource, maxNorm: number): Promise<number> {
  const op = "clipGradNorm";
  if (!(maxNorm > 0)) throw new MoongradError(op, `maxNorm must be > 0, got ${maxNorm}`);
  const grads = namedParams(op, params, "").map(([, p]) => p.grad).filter(
    (g): g is Tensor => g !== null,
  );
  for (const g of grads) {
    if (g.dtype !== "f32") {
      throw new MoongradError(op, `gradients must be f32, got ${g.dtype} ${g.shape}`);
    }
  }
  const total = await globalNorm(grads);
  if (Number.isFinite(maxNorm) && total > maxNorm) {
    const coef = maxNorm / (total + 1e-6);
    noGrad(() => {
      for (const g of grads) scope(() => copyInto(mul(g, coef), g));
    });
  }
  return total;
}

/**
 * The global norm of a step's parameter change: `new UpdateNorm(params)` copies the
 * parameters, `await measure()` after the step returns √(Σ‖W_after − W_before‖²) and frees
 * the copies (`dispose()` frees them without measuring).
 *
 * @example Measure one SGD step
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const opt = new mg.optim.SGD(lin, { lr: 0.1 });
 * mg.scope(() => lin.forward(mg.randn([2, 8], { seed: 1 })).square().sum().backward());
 * const grad = await mg.optim.globalNorm(lin.parameters().map((p) => p.grad!));
 * const u = new mg.optim.UpdateNorm(lin);
 * await opt.step();
 * console.log(Math.abs((await u.measure()) - 0.1 * grad) < 1e-4); // true
 * ```
 */
export class UpdateNorm {
  readonly #params: Tensor[];
  #copies: Tensor[] | null;

  /** Copies the parameters of `params` (the state before the step). */
  constructor(params: ParamSource) {
    this.#params = namedParams("UpdateNorm", params, "").map(([, p]) => p);
    this.#copies = noGrad(() =>
      this.#params.map((p) => {
        const c = zerosLike(p);
        copyInto(p, c);
        return c.keep();
      })
    );
  }

  /** √(Σ‖W_now − W_copied‖²), read back; frees the copies. */
  async measure(): Promise<number> {
    const copies = this.#copies;
    if (!copies) throw new MoongradError("UpdateNorm.measure", "already measured or disposed");
    this.#copies = null;
    const diffs = noGrad(() => this.#params.map((p, i) => sub(p, copies[i]).keep()));
    for (const c of copies) c.dispose();
    try {
      return await globalNorm(diffs);
    } finally {
      for (const d of diffs) d.dispose();
    }
  }

  /** Frees the copies. */
  dispose(): void {
    for (const c of this.#copies ?? []) c.dispose();
    this.#copies = null;
  }
}
