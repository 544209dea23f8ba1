/**
 * The adapter's limits, checked on the host before the device sees a request: every tensor
 * allocation (`checkAllocation`, called by `Tensor.empty` and the pool) and every kernel launch
 * (`checkDispatch`, called by the runtime's `dispatch`). A request past a limit is a
 * MoongradError naming the op, the shape (or workgroup grid) and the limit, thrown before any
 * buffer is created or any command recorded; without the check the device reported a
 * validation error at some later readback, naming whichever op read back.
 *
 * Which ops split and which throw. A tensor is one sub-buffer that every kernel binds whole, so
 * a tensor larger than `maxStorageBufferBindingSize` (128 MiB on Deno's wgpu defaults and on
 * lavapipe; up to 4 GiB on desktop GPUs, whatever `init()` could get) cannot exist: creating
 * one throws, whatever op creates it. Launch grids never split work: every element-count grid
 * folds into 2-D (ops/grid.ts: up to 65535² workgroups, more threads than the largest bindable
 * tensor has elements), so for tensors that fit the only launches that can exceed
 * `maxComputeWorkgroupsPerDimension` are those with a batch or head count on one grid axis;
 * they throw here, naming the kernel and the op that launched it.
 *
 * Costs: a few comparisons per allocation and per dispatch. The op named in an allocation
 * error comes from the caller's stack frames, parsed only when the check fails.
 */
import { gpuDevice } from "./device.ts";
import { byteSize, type DType } from "./dtype.ts";
import { fmtShape, MoongradError } from "./errors.ts";

/** Bytes in a readable form: `201326592 bytes (192 MiB)`. */
export function fmtBytes(bytes: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = "bytes";
  for (const unit of units) {
    if (v < 1024) break;
    v /= 1024;
    u = unit;
  }
  return u === "bytes" ? `${bytes} bytes` : `${bytes} bytes (${+v.toFixed(1)} ${u})`;
}

/**
 * The op a library call came from, read from the stack when an error needs it: the outermost
 * frame of the first run of frames in ops/ (the public op, not its helper), else the first
 * frame outside core/ (an nn/ or optim/ function), else "alloc".
 */
export function callerOp(stack = new Error().stack ?? ""): string {
  const frames = stack.split("\n").slice(1).map((l) => l.trim().replace(/^at /, ""));
  const dirOf = (f: string) => /\/(core|ops|nn|optim|io)\/[a-z_0-9]+\.ts/.exec(f)?.[1] ?? null;
  const nameOf = (f: string) => {
    const m = /^(?:async )?(?:new )?([\w$.<>]+) \(/.exec(f);
    return m ? m[1].replace(/^(Object|Module)\./, "").replace(/<anonymous>/, "") : "";
  };
  let i = frames.findIndex((f) => dirOf(f) === "ops");
  if (i >= 0) {
    while (i + 1 < frames.length && dirOf(frames[i + 1]) === "ops") i++;
    const name = nameOf(frames[i]);
    if (name) return name;
  }
  for (const f of frames) {
    const d = dirOf(f);
    if (d && d !== "core" && nameOf(f)) return nameOf(f);
  }
  return "alloc";
}

/**
 * Throws unless a tensor of `shape` and `dtype` fits one storage binding and one buffer of
 * this device. `op` names the op in the error (default: found from the stack).
 */
export function checkAllocation(shape: readonly number[], dtype: DType, op?: string): void {
  let n = 1;
  for (const d of shape) n *= d;
  const bytes = Math.max(n, 1) * byteSize(dtype);
  const limits = gpuDevice(op ?? "alloc").limits;
  const binding = limits.maxStorageBufferBindingSize;
  const buffer = limits.maxBufferSize;
  if (bytes <= binding && bytes <= buffer && Number.isSafeInteger(n)) return;
  const which = bytes > binding
    ? `maxStorageBufferBindingSize ${fmtBytes(binding)} (a kernel binds a tensor whole)`
    : `maxBufferSize ${fmtBytes(buffer)}`;
  throw new MoongradError(
    op ?? callerOp(),
    `a ${dtype} tensor of shape ${fmtShape(shape)} needs ${fmtBytes(bytes)}, more than this ` +
      `device's ${which}; maxBufferSize is ${fmtBytes(buffer)}. Use smaller pieces (a smaller ` +
      `batch, sequence or vocabulary) or an adapter with larger limits`,
  );
}

/**
 * Throws unless a launch grid is valid for this device: whole numbers, each at most
 * `maxComputeWorkgroupsPerDimension`. Names the kernel and the op that launched it.
 */
export function checkDispatch(
  kernel: string,
  limit: number,
  groups: readonly [number, number?, number?],
): void {
  const g = [groups[0], groups[1] ?? 1, groups[2] ?? 1];
  if (g.every((v) => Number.isInteger(v) && v >= 0 && v <= limit)) return;
  const op = callerOp();
  throw new MoongradError(
    op === "alloc" ? kernel : op,
    `kernel "${kernel}" would launch a grid of ${fmtShape(g)} workgroups; this device allows ` +
      `whole numbers up to maxComputeWorkgroupsPerDimension ${limit} per axis`,
  );
}
