import { BufferUsage, MAP_READ } from "./webgpu_flags.ts";
import { gpuDevice, reportGpuError, setRunningOp, throwPendingGpuError } from "./device.ts";
import { assertKernelUsable, type Kernel, kernelChecksDone } from "./kernel.ts";
import type { GpuBuf } from "./pool.ts";

/**
 * Records GPU work into one command encoder (one compute pass for consecutive dispatches)
 * and submits in batches. Kernel parameters of a batch live in one uniform arena that is
 * uploaded with `writeBuffer` right before the batch is submitted; queue order makes that
 * safe because the previous batch was submitted before the write.
 *
 * Each batch runs inside its own validation and out-of-memory error scopes, and remembers the
 * kernels it recorded, so an error the device reports later names the ops of its batch instead
 * of whichever op happens to read back next.
 */

/** Dispatches recorded before a batch is submitted without waiting for a readback. */
export const MAX_DISPATCHES_PER_BATCH = 256;

let encoder: GPUCommandEncoder | null = null;
let pass: GPUComputePassEncoder | null = null;
let dispatches = 0;
let batch = 0;
let arena: { buffer: GPUBuffer; cpu: Uint32Array<ArrayBuffer>; id: number; slot: number } | null =
  null;
let arenaIds = 0;
let paramStride = 256;
const bindGroups = new Map<string, GPUBindGroup>();
const batchOps = new Set<string>();
const pendingScopes = new Set<Promise<void>>();
let stats = { dispatches: 0, submits: 0 };

function ensureArena(device: GPUDevice, paramBytes: number): NonNullable<typeof arena> {
  paramStride = Math.max(device.limits.minUniformBufferOffsetAlignment, paramBytes);
  if (!arena) {
    const bytes = paramStride * MAX_DISPATCHES_PER_BATCH;
    arena = {
      buffer: device.createBuffer({
        label: "moongrad params",
        size: bytes,
        usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST,
      }),
      cpu: new Uint32Array(bytes / 4),
      id: ++arenaIds,
      slot: 0,
    };
  }
  return arena;
}

/** The id of the batch now being recorded. */
export function currentBatch(): number {
  return batch;
}

/** True when the open batch holds recorded work that has not been submitted. */
export function hasPendingWork(): boolean {
  return encoder !== null;
}

function openEncoder(device: GPUDevice): GPUCommandEncoder {
  if (!encoder) {
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    encoder = device.createCommandEncoder({ label: `moongrad batch ${batch}` });
  }
  return encoder;
}

/** Pops the batch's error scopes; an error is queued with the names of the batch's ops. */
function closeErrorScopes(device: GPUDevice, id: number): void {
  const ops = [...batchOps];
  batchOps.clear();
  const report = (e: GPUError | null) => {
    if (!e) return;
    const shown = ops.length > 12 ? `${ops.slice(0, 12).join(", ")}, …` : ops.join(", ");
    reportGpuError(
      `${e.constructor.name} in batch ${id} (ops: ${shown || "none"}): ${e.message}`,
      "batch",
    );
  };
  for (let i = 0; i < 2; i++) {
    const p: Promise<void> = device.popErrorScope().then(report, () => {}).finally(() =>
      pendingScopes.delete(p)
    );
    pendingScopes.add(p);
  }
}

/** Waits for the compiler's verdict on new kernels and for the error scopes of past batches. */
async function errorsSettled(): Promise<void> {
  await kernelChecksDone();
  while (pendingScopes.size) await Promise.all([...pendingScopes]);
}

/** Records one compute dispatch. Never waits; submits when the batch is full. */
export function dispatch(
  k: Kernel,
  buffers: readonly GpuBuf[],
  params: Uint32Array,
  groups: readonly [number, number?, number?],
): void {
  const device = gpuDevice(k.name);
  assertKernelUsable(k);
  setRunningOp(k.name);
  if (buffers.length !== k.storageCount) {
    throw new Error(`${k.name}: kernel expects ${k.storageCount} buffers, got ${buffers.length}`);
  }
  const a = ensureArena(device, k.paramBytes);
  const offset = a.slot * paramStride;
  a.cpu.set(params, offset / 4);
  a.slot++;
  let key = `${k.id}:${a.id}`;
  for (const b of buffers) key += `,${b.id}`;
  let group = bindGroups.get(key);
  if (!group) {
    if (bindGroups.size > 8192) bindGroups.clear();
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => ({
      binding: i,
      resource: { buffer: b.buffer },
    }));
    entries.push({
      binding: buffers.length,
      resource: { buffer: a.buffer, offset: 0, size: k.paramBytes },
    });
    group = device.createBindGroup({ label: k.name, layout: k.layout, entries });
    bindGroups.set(key, group);
  }
  for (const b of buffers) b.lastBatch = batch;
  pass ??= openEncoder(device).beginComputePass({ label: "moongrad" });
  batchOps.add(k.name);
  pass.setPipeline(k.pipeline);
  pass.setBindGroup(0, group, [offset]);
  pass.dispatchWorkgroups(groups[0], groups[1] ?? 1, groups[2] ?? 1);
  dispatches++;
  stats.dispatches++;
  if (a.slot >= MAX_DISPATCHES_PER_BATCH) flush();
}

/** Records a buffer-to-buffer copy in the open batch. */
export function copyBuffer(
  src: GpuBuf,
  srcOffset: number,
  dst: GPUBuffer,
  dstOffset: number,
  bytes: number,
): void {
  const device = gpuDevice("copy");
  if (pass) {
    pass.end();
    pass = null;
  }
  src.lastBatch = batch;
  openEncoder(device).copyBufferToBuffer(src.buffer, srcOffset, dst, dstOffset, bytes);
}

/** Submits everything recorded so far. Does not wait for the GPU. */
export function flush(): void {
  if (!encoder) return;
  const device = gpuDevice("flush");
  if (pass) {
    pass.end();
    pass = null;
  }
  if (arena && arena.slot > 0) {
    device.queue.writeBuffer(arena.buffer, 0, arena.cpu, 0, (arena.slot * paramStride) / 4);
    arena.slot = 0;
  }
  device.queue.submit([encoder.finish()]);
  encoder = null;
  closeErrorScopes(device, batch);
  dispatches = 0;
  batch++;
  stats.submits++;
}

/**
 * Writes bytes into a buffer. `queue.writeBuffer` executes before any unsubmitted encoder,
 * so when recorded-but-unsubmitted work uses this buffer (a pooled buffer freed and reused
 * within one batch), the batch is submitted first.
 */
export function upload(buf: GpuBuf, byteOffset: number, bytes: Uint8Array<ArrayBuffer>): void {
  const device = gpuDevice("upload");
  if (buf.lastBatch === batch && encoder) flush();
  const padded = bytes.byteLength % 4 === 0 ? bytes : padTo4(bytes);
  device.queue.writeBuffer(buf.buffer, byteOffset, padded);
}

function padTo4(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}

/** Copies `bytes` bytes at `byteOffset` of a buffer back to the CPU: the one place that awaits. */
export async function readback(
  op: string,
  buf: GpuBuf,
  byteOffset: number,
  bytes: number,
): Promise<ArrayBuffer> {
  const device = gpuDevice(op);
  const start = Math.floor(byteOffset / 4) * 4;
  const size = Math.max(4, Math.ceil((byteOffset + bytes - start) / 4) * 4);
  const staging = device.createBuffer({
    label: `moongrad readback (${op})`,
    size,
    usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
  });
  try {
    copyBuffer(buf, start, staging, 0, size);
    flush();
    await staging.mapAsync(MAP_READ).catch(async (e) => {
      await errorsSettled();
      throwPendingGpuError(op);
      throw e;
    });
    await errorsSettled();
    throwPendingGpuError(op);
    const skip = byteOffset - start;
    return staging.getMappedRange().slice(skip, skip + bytes);
  } finally {
    staging.destroy();
  }
}

/** Forgets cached bind groups that use a buffer about to be destroyed. */
export function forgetBuffer(buf: GpuBuf): void {
  const tag = `,${buf.id}`;
  for (const key of bindGroups.keys()) {
    if (key.includes(tag + ",") || key.endsWith(tag)) bindGroups.delete(key);
  }
}

/**
 * Waits until the GPU has finished all submitted work (use in benchmarks and tests).
 *
 * @example Time GPU work: wait until it has run
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.randn([256, 256], { seed: 0 });
 * const t0 = performance.now();
 * const c = a.matmul(a); // recorded, not yet executed
 * await mg.sync(); // submitted and finished
 * console.log(`${(performance.now() - t0).toFixed(1)} ms`, c.shape);
 * ```
 */
export async function sync(): Promise<void> {
  flush();
  await gpuDevice("sync").queue.onSubmittedWorkDone();
  await errorsSettled();
  throwPendingGpuError("sync");
}

/** Counters of recorded dispatches and submitted batches. */
export function runtimeStats(): { dispatches: number; submits: number; pending: number } {
  return { ...stats, pending: dispatches };
}

/** Resets the counters of `runtimeStats()`. */
export function resetRuntimeStats(): void {
  stats = { dispatches: 0, submits: 0 };
}
