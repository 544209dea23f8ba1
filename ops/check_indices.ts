/**
 * Range checks of index tensors on the GPU: indices, token ids and class targets live on the
 * device, so a host check would cost a readback per op. Instead each checked op records one
 * small kernel (`check_indices`, one thread per index, strided views read in place) that
 * compares every value with its allowed range [lo, hi) (plus one allowed extra value, e.g.
 * crossEntropy's ignoreIndex) and, for the values outside it, atomically updates its own
 * 4-word slot of a flag buffer: how many, the first flat position, the smallest and the
 * largest value (so a single bad value is reported exactly). A valid index costs one load
 * and two compares; no atomics run unless something is wrong.
 *
 * The flags come back with the next readback: the runtime (core/runtime.ts `ReadbackCheck`)
 * lets this module record, in the same submit as the data a readback asked for, a copy of the
 * used slots into a small staging buffer and a copy that resets them; after the submit the
 * slots are read, and any failure makes that `await data()` / `item()` / `sync()` throw a
 * MoongradError naming the op, the argument, the offending value, its position and the
 * allowed range. The failure is reported at the first readback after the op (not at the op:
 * the GPU has not run yet), whatever that readback reads. 1024 slots hold the checks of one
 * readback interval; past that the slots are harvested into a staging buffer early and the
 * verdict waits for the next readback.
 *
 * On by default; `setCheckIndices(false)` turns it off (out-of-range reads then give 0 and
 * writes are dropped, crossEntropy gives NaN). The flag buffers live outside the tensor pool
 * (`memory()` does not count them: 16 KiB each for flags and their reset pattern).
 *
 * Checked: gather, indexSelect, scatterAdd, indexAdd ([-n, n), negative counts from the end),
 * embedding and so the model's token ids ([0, vocab)), crossEntropy targets ([0, C) or
 * ignoreIndex), moePlan expert ids ([0, E); not the ids moeRoute made, which are valid by
 * construction).
 *
 * Cost, measured with bench/check_indices_cost.ts on the tiny K2 model (one training step =
 * loss forward, backward, MuonClip step, reading the loss; batch 4 × 64 tokens; lavapipe on
 * the shared 2-core CI machine, 2026-12-02): 2 extra dispatches per step (the embedding ids
 * and the loss targets; 1,597 against 1,595, +0.13 %) plus 2 small copies in the readback's
 * submit. Step time, check on vs off, alternating steps, median of 10 each: 1,990 vs 1,987 ms
 * and 1,423 vs 1,701 ms in two runs (load average 4–10): below the machine's run-to-run noise.
 * The kernel reads each index once (256 ids per step here).
 */
import { MAP_READ } from "../core/webgpu_flags.ts";
import { BufferUsage } from "../core/webgpu_flags.ts";
import { gpuDevice } from "../core/device.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { fitLength, params } from "../core/params.ts";
import { type GpuBuf, standaloneBuffer } from "../core/pool.ts";
import { copyBuffer, currentBatch, dispatch, setReadbackCheck } from "../core/runtime.ts";
import type { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;
/** Checks recorded between two readbacks before the slots are harvested early. */
const SLOTS = 1024;
const SLOT_WORDS = 4;
const SLOT_BYTES = SLOT_WORDS * 4;
const I32_MAX = 2147483647;
const I32_MIN = -2147483648;

let enabled = true;

/**
 * Turns the GPU range check of indices, token ids and class targets on (the default) or off;
 * returns the previous setting. Off, an out-of-range index reads 0, a write through it is
 * dropped and a bad crossEntropy target gives NaN, silently; on, the next readback throws.
 *
 * @example Measure the cost of the check, or trust your indices
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const before = mg.setCheckIndices(false); // true: on by default
 * console.log(await mg.gather(mg.tensor([1, 2, 3]), 0, mg.tensor([5], { dtype: "i32" })).toArray()); // [0]
 * mg.setCheckIndices(before);
 * try {
 *   await mg.gather(mg.tensor([1, 2, 3]), 0, mg.tensor([5], { dtype: "i32" })).data();
 * } catch (e) {
 *   console.log((e as Error).message); // moongrad.gather: index holds 5 at flat position 0 of [1]; the allowed range is [-3, 3) ...
 * }
 * ```
 */
export function setCheckIndices(on: boolean): boolean {
  if (typeof on !== "boolean") {
    throw new MoongradError("setCheckIndices", `expected true or false, got ${String(on)}`);
  }
  const was = enabled;
  enabled = on;
  return was;
}

/** What one slot checks: reported when its count is not zero. */
interface Entry {
  op: string;
  arg: string;
  shape: readonly number[];
  lo: number;
  hi: number;
  allow: number | undefined;
}

interface Harvest {
  batch: number;
  staging: GPUBuffer;
  entries: Entry[];
}

let flags: GpuBuf | null = null;
let reset: GpuBuf | null = null;
let pending: Entry[] = [];
const harvests: Harvest[] = [];
const freeStaging: GPUBuffer[] = [];

function setup(): GpuBuf {
  if (flags) return flags;
  const device = gpuDevice("checkIndices");
  const pattern = new Int32Array(SLOTS * SLOT_WORDS);
  for (let s = 0; s < SLOTS; s++) pattern.set([0, I32_MAX, I32_MAX, I32_MIN], s * SLOT_WORDS);
  flags = standaloneBuffer("index-check flags", SLOTS * SLOT_BYTES);
  reset = standaloneBuffer("index-check reset pattern", SLOTS * SLOT_BYTES);
  // Neither buffer is used by recorded work yet, so writing ahead of the open encoder is safe.
  device.queue.writeBuffer(flags.buffer, 0, pattern);
  device.queue.writeBuffer(reset.buffer, 0, pattern);
  setReadbackCheck({ beforeSubmit: harvest, afterSubmit: verdict });
  return flags;
}

/** Ranks up to R: the view's shape and strides fill what the scalars leave of the block. */
const R = fitLength(8, 2);
const CHECK = params("check_indices", {
  n: "u32",
  rank: "u32",
  offset: "u32",
  slot: "u32",
  lo: "i32",
  hi: "i32",
  hasAllow: "u32",
  allow: "i32",
  shape: ["u32", R],
  strides: ["u32", R],
});

function checkKernel() {
  return kernel({
    name: "check_indices",
    pairable: true,
    bindings: [
      { name: "idx", type: "i32", access: "read" },
      { name: "flags", type: "atomic<i32>", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: CHECK,
    body: `
  let i = ${linearId(WG)};
  if (i >= p_n()) { return; }
  var rem = i;
  var o = p_offset();
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    o += (rem % dim) * p_strides(u32(d));
    rem /= dim;
  }
  let v = idx[o];
  if (v >= p_lo() && v < p_hi()) { return; }
  if (p_hasAllow() != 0u && v == p_allow()) { return; }
  let s = p_slot();
  atomicAdd(&flags[s], 1);
  atomicMin(&flags[s + 1u], i32(i));
  atomicMin(&flags[s + 2u], v);
  atomicMax(&flags[s + 3u], v);`,
  });
}

/**
 * Records a check that every value of the i32 tensor `index` lies in [lo, hi) (or equals
 * `allow`); a failure is thrown by the next readback, naming `op` and `arg`. No-op when the
 * check is off or the tensor is empty. Call it after validating shapes and dtypes, before or
 * after recording the op itself (the check only reads the index).
 * @example
 * ```ts ignore
 * checkIndexRange("gather", "index", index, -n, n);
 * ```
 */
export function checkIndexRange(
  op: string,
  arg: string,
  index: Tensor,
  lo: number,
  hi: number,
  allow?: number,
): void {
  const n = index.size;
  if (!enabled || n === 0) return;
  if (index.rank > R) {
    throw new MoongradError(
      op,
      `${arg} has rank ${index.rank}; the index check takes rank <= ${R}`,
    );
  }
  const buf = setup();
  if (pending.length === SLOTS) harvest();
  const slot = pending.length;
  pending.push({ op, arg, shape: index.shape, lo, hi, allow });
  const flat = index.isContiguous;
  const shape = flat ? [n] : index.shape;
  const strides = flat ? [1] : index.strides;
  const clamp = (v: number) => Math.max(I32_MIN, Math.min(I32_MAX, v));
  const words = CHECK.pack({
    n,
    rank: shape.length,
    offset: index.offset,
    slot: slot * SLOT_WORDS,
    lo: clamp(lo),
    hi: clamp(hi),
    hasAllow: allow !== undefined,
    allow: clamp(allow ?? 0),
    shape,
    strides,
  });
  dispatch(checkKernel(), [index.storage(op).buf, buf], words, grid1d(n, WG));
}

/** Records the copies that bring the used slots back and reset them (in the open batch). */
function harvest(): void {
  if (!pending.length || !flags || !reset) return;
  const bytes = pending.length * SLOT_BYTES;
  const staging = freeStaging.pop() ?? gpuDevice("checkIndices").createBuffer({
    label: "moongrad index-check readback",
    size: SLOTS * SLOT_BYTES,
    usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
  });
  copyBuffer(flags, 0, staging, 0, bytes);
  copyBuffer(reset, 0, flags.buffer, 0, bytes);
  harvests.push({ batch: currentBatch(), staging, entries: pending });
  pending = [];
}

/** Reads the harvests whose batch was submitted; throws for the first failed check. */
async function verdict(): Promise<void> {
  const now = currentBatch();
  const ready: Harvest[] = [];
  for (let i = harvests.length - 1; i >= 0; i--) {
    if (harvests[i].batch < now) ready.unshift(...harvests.splice(i, 1));
  }
  // Map every ready harvest at once: each wait costs Deno's WebGPU ~10 ms after the work.
  const read = await Promise.allSettled(ready.map(async (h) => {
    const bytes = h.entries.length * SLOT_BYTES;
    try {
      await h.staging.mapAsync(MAP_READ, 0, bytes);
      const words = new Int32Array(h.staging.getMappedRange(0, bytes).slice(0));
      h.staging.unmap();
      freeStaging.push(h.staging);
      return words;
    } catch (e) {
      h.staging.destroy();
      throw e;
    }
  }));
  const failures: string[] = [];
  let first: Entry | null = null;
  for (const [i, h] of ready.entries()) {
    const r = read[i];
    if (r.status === "rejected") throw r.reason;
    const words = r.value;
    h.entries.forEach((e, s) => {
      const [count, pos, min, max] = words.subarray(s * SLOT_WORDS, (s + 1) * SLOT_WORDS);
      if (count === 0) return;
      first ??= e;
      failures.push(describe(e, count, pos, min, max));
    });
  }
  if (!first) return;
  const more = failures.length > 1
    ? ` (and ${failures.length - 1} more failed check(s): ${failures.slice(1, 4).join("; ")})`
    : "";
  throw new MoongradError((first as Entry).op, failures[0] + more);
}

function describe(e: Entry, count: number, pos: number, min: number, max: number): string {
  const range = `[${e.lo}, ${e.hi})${e.allow === undefined ? "" : ` or ${e.allow} (ignored)`}`;
  const where = `of ${e.arg} ${fmtShape(e.shape)}`;
  const how = "(found on the GPU, reported at the next readback; " +
    "mg.setCheckIndices(false) turns the check off)";
  if (count === 1) {
    return `${e.arg} holds ${min} at flat position ${pos} ${where}; the allowed range is ` +
      `${range} ${how}`;
  }
  return `${e.arg} holds ${count} values outside the allowed range ${range}: the first at ` +
    `flat position ${pos} ${where}, the smallest ${min}, the largest ${max} ${how}`;
}
