/**
 * The non-finite check of optimizers (`checkFinite`): one elementwise dispatch per gradient
 * that sets a u32 flag when any element is NaN or ±Inf, tested on the exponent bits (which a
 * compiler assuming finite math cannot fold away). Flags of all gradients go in one buffer,
 * read back once per step.
 *
 * Cost: reads each gradient once (4 B/element), writes at most one word; the step's cost is
 * the single readback that waits for the queue.
 */
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { needContiguousF32 } from "./f32_operand.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

/** Elements, offset of the gradient, the flag word (the flags' offset plus the slot). */
const FLAG = params("flag_non_finite", { n: "u32", offset: "u32", flag: "u32" });

/**
 * Writes 1 into `flags[slot]` when any element of the f32 tensor `t` is NaN or ±Inf (tested
 * on the bit pattern, which the compiler cannot fold away). `flags` is a u32 tensor the
 * caller zeroed; reading it back is the caller's (awaited) business.
 */
export function flagNonFinite(t: Tensor, flags: Tensor, slot: number): void {
  const n = t.size;
  needContiguousF32("checkFinite", "gradient", t, n);
  if (n === 0) return;
  const k = kernel({
    name: "flag_non_finite",
    bindings: [
      { name: "T", type: "u32", access: "read" },
      { name: "F", type: "u32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: FLAG,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  if ((T[p_offset() + i] & 0x7f800000u) == 0x7f800000u) { F[p_flag()] = 1u; }`,
  });
  const words = FLAG.pack({ n, offset: t.offset, flag: flags.offset + slot });
  dispatch(k, [t.storage("checkFinite").buf, flags.storage("checkFinite").buf], words, [
    ...grid1d(n, WG),
  ]);
}
