/**
 * Token id batches for the language model, and their range check. Ids given as host data are
 * checked on the CPU before upload (an O(B·T) loop, no GPU work, no readback); ids already in a
 * GPU tensor are checked by `checkTokenIdsAsync`, which costs one readback of the ids. A bad id
 * is a MoongradError naming the id and its [batch, position], never a zero embedding row.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { Tensor } from "../core/tensor.ts";
import { tensor } from "../ops/creation.ts";

/**
 * Token ids on the host: nested rows [B][T], or flat values with their [B, T] shape.
 *
 * @example Rows of ids, or flat ids with a shape
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const model = new mg.nn.KimiLM("tiny", { seed: 0 });
 * const rows: mg.nn.HostTokenIds = [[72, 105], [33, 10]];
 * const flat: mg.nn.HostTokenIds = { data: new Int32Array([72, 105, 33, 10]), shape: [2, 2] };
 * console.log(model.forward(rows).shape, model.forward(flat).shape); // [2, 2, 256] [2, 2, 256]
 * ```
 */
export type HostTokenIds =
  | readonly (readonly number[])[]
  | { readonly data: ArrayLike<number>; readonly shape: readonly [number, number] };

/**
 * Token ids for the model: an i32 [B, T] tensor, or host data (range-checked for free).
 *
 * @example A GPU tensor or host data
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const model = new mg.nn.KimiLM("tiny", { seed: 0 });
 * const ids: mg.nn.TokenIds = mg.tensor([[1, 2, 3]], { dtype: "i32" });
 * console.log(model.forward(ids).shape); // [1, 3, 256]
 * ```
 */
export type TokenIds = Tensor | HostTokenIds;

/**
 * Which values are allowed besides [0, vocab): HF's ignore index −100 for labels.
 *
 * @example Labels may hold the ignore index
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const check: mg.nn.TokenCheck = { vocabSize: 256, ignoreIndex: -100 };
 * mg.nn.checkTokenValues("train", "labels", [5, -100, 7], [1, 3], check); // passes
 * try {
 *   mg.nn.checkTokenValues("train", "labels", [5, 256, 7], [1, 3], check);
 * } catch (e) {
 *   console.log((e as Error).message); // moongrad.train: labels holds 256 at [0, 1] of [1, 3]; token ids must be integers in [0, 256) or -100 (ignored)
 * }
 * ```
 */
export interface TokenCheck {
  /** Vocabulary size V: ids must lie in [0, V). */
  vocabSize: number;
  /** A value also allowed (labels: −100, ignored by the loss). */
  ignoreIndex?: number;
}

/**
 * Throws a MoongradError naming the first id outside [0, vocabSize) (other than
 * `ignoreIndex`) and its [batch, position] in a [B, T] batch of flat values.
 * @example
 * ```ts
 * checkTokenValues("KimiLM.forward", "ids", [1, 2, 300], [1, 3], { vocabSize: 256 }); // throws
 * ```
 */
export function checkTokenValues(
  op: string,
  arg: string,
  values: ArrayLike<number>,
  shape: readonly [number, number],
  check: TokenCheck,
): void {
  const [, T] = shape;
  const V = check.vocabSize;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isInteger(v) && v >= 0 && v < V) continue;
    if (check.ignoreIndex !== undefined && v === check.ignoreIndex) continue;
    const also = check.ignoreIndex !== undefined ? ` or ${check.ignoreIndex} (ignored)` : "";
    throw new MoongradError(
      op,
      `${arg} holds ${v} at [${Math.floor(i / T)}, ${i % T}] of ${fmtShape(shape)}; ` +
        `token ids must be integers in [0, ${V})${also}`,
    );
  }
}

/**
 * An i32 [B, T] tensor from token ids: a tensor is returned as is (after a dtype/rank check;
 * its values are not read), host data is range-checked with `checkTokenValues` and uploaded.
 * `owned` tells the caller whether it must dispose the result.
 *
 * @example Upload checked host ids
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const { t, owned } = mg.nn.tokenTensor("demo", "ids", [[1, 2, 3]], { vocabSize: 256 });
 * console.log(t.dtype, t.shape, owned); // i32 [1, 3] true
 * if (owned) t.dispose();
 * ```
 */
export function tokenTensor(
  op: string,
  arg: string,
  ids: TokenIds,
  check: TokenCheck,
): { t: Tensor; owned: boolean } {
  if (ids instanceof Tensor) {
    if (ids.dtype !== "i32" || ids.rank !== 2) {
      throw new MoongradError(
        op,
        `${arg} must be i32 [batch, seq], got ${ids.dtype} ${fmtShape(ids.shape)}`,
      );
    }
    return { t: ids, owned: false };
  }
  let data: ArrayLike<number>;
  let shape: [number, number];
  if (Array.isArray(ids)) {
    const rows = ids as readonly (readonly number[])[];
    const T = rows.length ? rows[0]?.length : 0;
    if (!rows.every((r) => Array.isArray(r) && r.length === T)) {
      throw new MoongradError(op, `${arg} must be rows of equal length (a [batch, seq] batch)`);
    }
    shape = [rows.length, T];
    data = rows.flat();
  } else {
    const h = ids as { data: ArrayLike<number>; shape: readonly [number, number] };
    if (!h || !h.data || !Array.isArray(h.shape) || h.shape.length !== 2) {
      throw new MoongradError(
        op,
        `${arg} must be a Tensor, rows of ids, or { data, shape: [B, T] }`,
      );
    }
    shape = [h.shape[0], h.shape[1]];
    data = h.data;
    if (shape[0] * shape[1] !== data.length) {
      throw new MoongradError(
        op,
        `${arg} has ${data.length} values for shape ${fmtShape(shape)}`,
      );
    }
  }
  if (shape[0] === 0 || shape[1] === 0) {
    throw new MoongradError(op, `${arg} must hold at least one token, got ${fmtShape(shape)}`);
  }
  checkTokenValues(op, arg, data, shape, check);
  return { t: tensor(Int32Array.from(data), { shape, dtype: "i32" }), owned: true };
}

/**
 * Reads a GPU tensor of token ids back (one readback: ~10 ms of latency on a CPU adapter,
 * 4·B·T bytes) and applies `checkTokenValues`. Use it on ids that did not come from host data.
 * @example
 * ```ts
 * await checkTokenIdsAsync("train", "ids", ids, { vocabSize: 256 });
 * ```
 */
export async function checkTokenIdsAsync(
  op: string,
  arg: string,
  ids: Tensor,
  check: TokenCheck,
): Promise<void> {
  const { t } = tokenTensor(op, arg, ids, check);
  checkTokenValues(op, arg, await t.data(), [t.shape[0], t.shape[1]], check);
}
