import { BufferUsage, MAP_READ } from "./webgpu_flags.ts";
import {
  deviceInfo,
  gpuDevice,
  reportGpuError,
  setRunningOp,
  throwPendingGpuError,
} from "./device.ts";
import { MoongradError } from "./errors.ts";
import {
  assertKernelUsable,
  type Kernel,
  kernel,
  kernelChecksDone,
  PARAM_WORDS,
  PARAM_ZERO_WORD,
} from "./kernel.ts";
import { params } from "./params.ts";
import { acquire, type GpuBuf, release, type Slab } from "./pool.ts";
import { checkDispatch } from "./limits.ts";
import { coLaunch, type Launch } from "./colaunch.ts";
import type { GpuTex } from "./textures.ts";

/** What a kernel binding takes: a storage sub-buffer, or a texture where it declares one. */
export type Bound = GpuBuf | GpuTex;

/**
 * Records GPU work into one command encoder (one compute pass for consecutive dispatches)
 * and submits in batches. Kernel parameters of a batch live in one uniform arena that is
 * uploaded with `writeBuffer` right before the batch is submitted; queue order makes that
 * safe because the previous batch was submitted before the write.
 *
 * Bind groups. Tensors are sub-buffers of slabs (core/pool.ts). A kernel's storage bindings
 * bind whole-class ranges of slabs with dynamic offsets, so a bind group is cached per (kernel,
 * parameter arena, slab of each binding) and each dispatch passes the sub-buffers' offsets: the
 * bind groups a program needs are bounded by kernels × slab combinations, and a steady training
 * loop creates none. Keyed by buffer, the tiny K2 step created ~640 per step: ~31 µs of
 * createBindGroup each on the 2-core CI machine (20 ms per step of JavaScript time, on a GPU
 * comparable to the whole recording), plus native memory that Deno frees only when the GC
 * collects the object, so it climbed to a higher plateau, later. (It is not a leak: 40,000
 * bind groups created and dropped with a GC every 2,000 plateau within 5 MB; likewise 6,000
 * submits.) Bindings past the device's `maxDynamicStorageBuffersPerPipelineLayout` (4 on
 * Dawn/SwiftShader, 32 on lavapipe) bind their sub-buffer's range and key the bind group by
 * sub-buffer. All storage bindings are read_write (see kernelSource), so one sub-buffer passed
 * to two bindings would be two overlapping writable ranges, which Dawn rejects: the repeat gets
 * a scratch copy (counted in `runtimeStats().aliasCopies`; pointwise and gram bind a repeated
 * tensor once instead).
 *
 * Submits. Readbacks record their copy and submit together at the end of the current
 * JavaScript task (all the `data()` calls of one `Promise.all` share one submit; the tiny K2
 * step went from 14 to 7 submits), into staging buffers reused from a small pool.
 *
 * Checks ride along with readbacks: `setReadbackCheck` installs one (the index range check of
 * ops/check_indices.ts) whose result copies are recorded into the same submit as the data a
 * readback asked for, and whose failure that readback (or `sync()`) throws.
 *
 * Every dispatch is checked against `maxComputeWorkgroupsPerDimension` before it is recorded
 * (core/limits.ts), so a grid too large is a MoongradError naming the kernel, not a batch
 * validation error at some later readback.
 *
 * Each batch runs inside its own validation and out-of-memory error scopes, and remembers the
 * kernels it recorded, so an error the device reports later names the ops of its batch instead
 * of whichever op happens to read back next.
 */

/** Dispatches recorded before a batch is submitted without waiting for a readback. */
export const MAX_DISPATCHES_PER_BATCH = 256;

/** Cached bind groups kept before the cache is dropped (a safety bound; see bindGroupFor). */
const MAX_BIND_GROUPS = 16384;

let encoder: GPUCommandEncoder | null = null;
let pass: GPUComputePassEncoder | null = null;
let dispatches = 0;
let batch = 0;
let arena: { buffer: GPUBuffer; cpu: Uint32Array<ArrayBuffer>; id: number; slot: number } | null =
  null;
let arenaIds = 0;
let paramStride = 256;
const bindGroups = new Map<string, GPUBindGroup>();
/** Keys of cached bind groups per slab id, to forget them when a slab is destroyed. */
const keysBySlab = new Map<number, string[]>();
/** The same per texture id (core/textures.ts). */
const keysByTexture = new Map<number, string[]>();
const batchOps = new Set<string>();
const pendingScopes = new Set<Promise<void>>();
let stats = { dispatches: 0, submits: 0, bindGroupsCreated: 0, aliasCopies: 0, coLaunched: 0 };

function ensureArena(device: GPUDevice): NonNullable<typeof arena> {
  paramStride = Math.max(device.limits.minUniformBufferOffsetAlignment, PARAM_WORDS * 4);
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
  return encoder !== null || held !== null;
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

/**
 * An opt-in observer of recorded work (cli/profile.ts installs one; none is installed
 * otherwise, and then each dispatch and submit pays one null check). `dispatch` is called for
 * every dispatch just before it is recorded; when it returns timestamp writes, that dispatch
 * gets a compute pass of its own that writes them. `beforeSubmit` is called with the batch's
 * encoder (all passes ended) right before it is finished and submitted, `afterSubmit` right
 * after the submit.
 */
export interface DispatchProfiler {
  /** Sees one dispatch of kernel `kernel`; may return timestamp writes for its own pass. */
  dispatch(
    kernel: string,
    groups?: readonly [number, number?, number?],
  ): GPUComputePassTimestampWrites | undefined;
  /** The batch's encoder, before `finish()` (e.g. to resolve a query set). */
  beforeSubmit(encoder: GPUCommandEncoder): void;
  /** The batch was submitted (e.g. map what `beforeSubmit` copied). */
  afterSubmit(): void;
}

let profiler: DispatchProfiler | null = null;

/**
 * Installs (or, with null, removes) the dispatch profiler; returns the previous one. Records
 * pending work first, so a profiler sees whole batches.
 *
 * @example Count dispatches per kernel
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * import { setDispatchProfiler } from "./core/runtime.ts";
 * await mg.init();
 * const counts = new Map<string, number>();
 * setDispatchProfiler({
 *   dispatch: (k) => void counts.set(k, (counts.get(k) ?? 0) + 1),
 *   beforeSubmit: () => {},
 *   afterSubmit: () => {},
 * });
 * mg.randn([64, 64], { seed: 0 }).matmul(mg.randn([64, 64], { seed: 1 }));
 * await mg.sync();
 * setDispatchProfiler(null);
 * console.log(counts.size > 0); // true
 * ```
 */
export function setDispatchProfiler(p: DispatchProfiler | null): DispatchProfiler | null {
  flush();
  const previous = profiler;
  profiler = p;
  return previous;
}

/**
 * Records one compute dispatch. Never waits; submits when the batch is full. A dispatch of a
 * pairable kernel is held back until the next dispatch: when that one is pairable and
 * independent too, both are recorded as one launch (core/colaunch.ts). `runtimeStats()`
 * counts launches, so a held dispatch counts at once and a merged pair counts one.
 */
export function dispatch(
  k: Kernel,
  buffers: readonly Bound[],
  params: Uint32Array,
  groups: readonly [number, number?, number?],
): void {
  const device = gpuDevice(k.name);
  assertKernelUsable(k);
  checkDispatch(k.name, device.limits.maxComputeWorkgroupsPerDimension, groups);
  setRunningOp(k.name);
  if (buffers.length !== k.storageCount) {
    throw new Error(`${k.name}: kernel expects ${k.storageCount} buffers, got ${buffers.length}`);
  }
  if (params.length > PARAM_ZERO_WORD && params[PARAM_ZERO_WORD] !== 0) {
    throw new Error(`${k.name}: parameter word ${PARAM_ZERO_WORD} is reserved and must be 0`);
  }
  const launch: Launch = {
    k,
    bufs: buffers,
    params,
    groups: [groups[0], groups[1] ?? 1, groups[2] ?? 1],
  };
  stats.dispatches++;
  if (!(coLaunching ?? !deviceInfo().isFallbackAdapter) || !k.def || hasAlias(buffers)) {
    settle();
    record(launch);
    return;
  }
  const next = { ...launch, bufs: buffers.slice(), params: params.slice() };
  if (held) {
    const first = held;
    held = null;
    let both: Launch | null = null;
    try {
      both = coLaunch(first, next, {
        storageBuffers: device.limits.maxStorageBuffersPerShaderStage,
        workgroupBytes: device.limits.maxComputeWorkgroupStorageSize,
        groupsPerDimension: device.limits.maxComputeWorkgroupsPerDimension,
      });
    } catch {
      both = null; // a merge that cannot be built: the two launches as they were
    }
    if (both) {
      stats.dispatches--;
      stats.coLaunched++;
      record(both);
      return;
    }
    record(first);
  }
  held = next;
}

let held: Launch | null = null;
/** Co-launch on, off, or (null) on except on CPU adapters (see `setCoLaunch`). */
let coLaunching: boolean | null = null;

/**
 * Turns co-launching of independent pairable dispatches (core/colaunch.ts) on (true), off
 * (false), or back to the default (null): on, except on CPU (fallback) adapters. There the
 * merged kernel costs more than the launch it saves: llvmpipe runs the branch on the
 * workgroup index under an execution mask, so each job runs masked (measured on lavapipe:
 * +30% for an ALU loop, and the tiny-K2 AdamW step's GPU time 191 → 229 ms). Returns the
 * previous setting. Tests and the launch-count budget use it; not part of the public API.
 */
export function setCoLaunch(on: boolean | null): boolean | null {
  settle();
  const previous = coLaunching;
  coLaunching = on;
  return previous;
}

/** Records the held dispatch, if any (before anything else touches the encoder or queue). */
function settle(): void {
  if (!held) return;
  const h = held;
  held = null;
  record(h);
}

/** Records one launch into the open compute pass. */
function record(launch: Launch): void {
  const { k, bufs: buffers, params, groups } = launch;
  const device = gpuDevice(k.name);
  const copies = hasAlias(buffers) ? separateAliases(k, buffers as GpuBuf[]) : null;
  const bufs = copies?.bufs ?? buffers;
  // A wide block (a co-launch's) takes two slots; the batch is submitted before it would not fit.
  const slots = Math.ceil(k.paramBytes / paramStride);
  if (arena && arena.slot + slots > MAX_DISPATCHES_PER_BATCH) flush();
  const a = ensureArena(device);
  const offset = a.slot * paramStride;
  a.cpu.set(params.subarray(0, k.paramBytes / 4), offset / 4);
  a.cpu[offset / 4 + PARAM_ZERO_WORD] = 0; // every parameter read adds it (core/kernel.ts)
  a.slot += slots;
  const group = bindGroupFor(device, k, a, bufs);
  const offsets: number[] = [];
  for (let i = 0; i < k.dynamicCount; i++) offsets.push((bufs[i] as GpuBuf).offset);
  offsets.push(offset);
  for (const b of bufs) b.lastBatch = batch;
  // Profiling (off: one null check): a dispatch with timestamp writes gets its own pass.
  const timestampWrites = profiler?.dispatch(k.name, groups);
  if (timestampWrites && pass) {
    pass.end();
    pass = null;
  }
  pass ??= openEncoder(device).beginComputePass(
    timestampWrites ? { label: "moongrad", timestampWrites } : { label: "moongrad" },
  );
  batchOps.add(k.name);
  pass.setPipeline(k.pipeline);
  pass.setBindGroup(0, group, offsets);
  pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
  if (timestampWrites) {
    pass.end();
    pass = null;
  }
  dispatches++;
  if (copies) { for (const c of copies.scratch) release(c); }
  if (a.slot >= MAX_DISPATCHES_PER_BATCH) flush();
}

/**
 * The cached bind group of a kernel for these buffers: keyed by the slab of each dynamic
 * binding and by the sub-buffer of each fixed one. The cache is bounded by what a program
 * uses; MAX_BIND_GROUPS only guards against a pathological program (dropping the cache frees
 * no native memory in Deno 2.9.6, so it is a last resort, not a policy).
 */
function bindGroupFor(
  device: GPUDevice,
  k: Kernel,
  a: NonNullable<typeof arena>,
  bufs: readonly Bound[],
): GPUBindGroup {
  let key = `${k.id}:${a.id}`;
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i];
    key += "view" in b
      ? `,t${b.id}`
      : i < k.dynamicCount
      ? `,${b.slab.id}`
      : `,${b.slab.id}@${b.offset}`;
  }
  let group = bindGroups.get(key);
  if (group) return group;
  if (bindGroups.size >= MAX_BIND_GROUPS) {
    bindGroups.clear();
    keysBySlab.clear();
    keysByTexture.clear();
  }
  const entries: GPUBindGroupEntry[] = bufs.map((b, i) => ({
    binding: i,
    resource: "view" in b
      ? b.view
      : i < k.dynamicCount
      ? { buffer: b.buffer, offset: 0, size: b.size }
      : { buffer: b.buffer, offset: b.offset, size: b.size },
  }));
  entries.push({
    binding: bufs.length,
    resource: { buffer: a.buffer, offset: 0, size: k.paramBytes },
  });
  group = device.createBindGroup({ label: k.name, layout: k.layout, entries });
  stats.bindGroupsCreated++;
  bindGroups.set(key, group);
  for (const b of bufs) {
    const [map, id] = "view" in b ? [keysByTexture, b.id] : [keysBySlab, b.slab.id];
    const keys = map.get(id);
    if (!keys) map.set(id, [key]);
    else if (keys[keys.length - 1] !== key) keys.push(key);
  }
  return group;
}

/** The alias copy's one parameter: words to copy. */
const ALIAS_COPY = params("alias_copy", { words: "u32" });

/** Word copy between two sub-buffers (a kernel, not copyBufferToBuffer: they may share a slab). */
function copyKernel(): Kernel {
  return kernel({
    name: "alias_copy",
    bindings: [
      { name: "src", type: "u32", access: "read" },
      { name: "dst", type: "u32", access: "read_write" },
    ],
    workgroupSize: [256],
    params: ALIAS_COPY,
    body: `
  let i = (wid.y * nwg.x + wid.x) * 256u + lidx;
  if (i < p_words()) { dst[i] = src[i]; }`,
  });
}

function hasAlias(bufs: readonly Bound[]): boolean {
  for (let i = 1; i < bufs.length; i++) {
    for (let j = 0; j < i; j++) if (bufs[i] === bufs[j]) return true;
  }
  return false;
}

/**
 * One sub-buffer passed to several bindings: every binding is read_write, and two overlapping
 * writable ranges in one dispatch are a validation error on Dawn. Each repeat the kernel only
 * reads gets a scratch copy (a copy kernel recorded just before, so it sees all earlier
 * work; copyBufferToBuffer cannot copy within one slab); the one
 * binding that writes, if any, keeps the original. Two writing bindings are an error.
 */
function separateAliases(
  k: Kernel,
  buffers: readonly GpuBuf[],
): { bufs: GpuBuf[]; scratch: GpuBuf[] } {
  const bufs = buffers.slice();
  const scratch: GpuBuf[] = [];
  const done = new Set<GpuBuf>();
  for (const b of buffers) {
    if (done.has(b)) continue;
    done.add(b);
    const at = buffers.flatMap((x, i) => (x === b ? [i] : []));
    if (at.length < 2) continue;
    const writers = at.filter((i) => k.access[i] === "read_write");
    if (writers.length > 1) {
      throw new MoongradError(
        k.name,
        `bindings ${writers.join(" and ")} are the same tensor storage and both are written`,
      );
    }
    const keep = writers[0] ?? at[0];
    for (const i of at) {
      if (i === keep) continue;
      const c = acquire(b.size);
      const words = b.size / 4;
      const wgs = Math.ceil(words / 256);
      const gx = Math.min(wgs, 65535);
      dispatch(copyKernel(), [b, c], ALIAS_COPY.pack({ words }), [gx, Math.ceil(wgs / gx)]);
      stats.aliasCopies++;
      bufs[i] = c;
      scratch.push(c);
    }
  }
  return { bufs, scratch };
}

/**
 * A check whose verdict travels with readbacks (ops/check_indices.ts): its GPU results are
 * copied back in the same submit as the data a readback asked for, and a failure is thrown by
 * that readback (and by `sync()`), so the check costs no round trip of its own.
 */
export interface ReadbackCheck {
  /** Records, in the open batch, the copies that bring its results back (before the submit). */
  beforeSubmit(): void;
  /** After the submit: reads what came back and throws the first failure found. */
  afterSubmit(): Promise<void>;
}

let readbackCheck: ReadbackCheck | null = null;

/** Installs the check that rides along with every readback (one at most; null removes it). */
export function setReadbackCheck(check: ReadbackCheck | null): void {
  readbackCheck = check;
}

/** Records a copy from a sub-buffer (`srcOffset` bytes into it) in the open batch. */
export function copyBuffer(
  src: GpuBuf,
  srcOffset: number,
  dst: GPUBuffer,
  dstOffset: number,
  bytes: number,
): void {
  const device = gpuDevice("copy");
  settle();
  if (pass) {
    pass.end();
    pass = null;
  }
  src.lastBatch = batch;
  openEncoder(device).copyBufferToBuffer(src.buffer, src.offset + srcOffset, dst, dstOffset, bytes);
}

/**
 * Records a copy of `rows` rows of `width` texels (16 bytes each) from a sub-buffer (`srcOffset`
 * bytes into it, rows `bytesPerRow` apart, a multiple of 256) into texture `dst` at row `y`.
 */
export function copyToTexture(
  src: GpuBuf,
  srcOffset: number,
  bytesPerRow: number,
  width: number,
  rows: number,
  dst: GpuTex,
  y: number,
): void {
  const device = gpuDevice("copy");
  settle();
  if (pass) {
    pass.end();
    pass = null;
  }
  src.lastBatch = batch;
  dst.lastBatch = batch;
  openEncoder(device).copyBufferToTexture(
    { buffer: src.buffer, offset: src.offset + srcOffset, bytesPerRow, rowsPerImage: rows },
    { texture: dst.texture, origin: { x: 0, y } },
    { width, height: rows },
  );
}

/** Submits everything recorded so far. Does not wait for the GPU. */
export function flush(): void {
  settle();
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
  profiler?.beforeSubmit(encoder);
  device.queue.submit([encoder.finish()]);
  profiler?.afterSubmit();
  encoder = null;
  closeErrorScopes(device, batch);
  dispatches = 0;
  batch++;
  stats.submits++;
}

/**
 * Writes bytes into a buffer. `queue.writeBuffer` executes before any unsubmitted encoder,
 * so when recorded-but-unsubmitted work uses this sub-buffer (one freed and reused within one
 * batch), the batch is submitted first. The hazard is per sub-buffer: writing one sub-buffer
 * of a slab while recorded work uses another one of the same slab is safe.
 */
export function upload(buf: GpuBuf, byteOffset: number, bytes: Uint8Array<ArrayBuffer>): void {
  const device = gpuDevice("upload");
  settle();
  if (buf.lastBatch === batch && encoder) flush();
  const padded = bytes.byteLength % 4 === 0 ? bytes : padTo4(bytes);
  device.queue.writeBuffer(buf.buffer, buf.offset + byteOffset, padded);
}

function padTo4(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}

/** Staging buffers (MAP_READ | COPY_DST) kept for reuse, by size (a power of two ≥ 256). */
const stagingFree = new Map<number, GPUBuffer[]>();
let stagingPooledBytes = 0;
/** Staging bytes kept for reuse at most (larger readbacks destroy theirs). */
const STAGING_POOL_BYTES = 16 * 1024 * 1024;
let flushAtTaskEnd: Promise<void> | null = null;

/** Submits at the end of the current task, once, however many readbacks asked for it. */
function flushSoon(): Promise<void> {
  flushAtTaskEnd ??= Promise.resolve().then(() => {
    flushAtTaskEnd = null;
    flush();
  });
  return flushAtTaskEnd;
}

function takeStaging(device: GPUDevice, op: string, bytes: number): GPUBuffer {
  const size = 2 ** Math.ceil(Math.log2(Math.max(256, bytes)));
  const list = stagingFree.get(size);
  const hit = list?.pop();
  if (hit) {
    stagingPooledBytes -= size;
    return hit;
  }
  return device.createBuffer({
    label: `moongrad readback (${op})`,
    size,
    usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
  });
}

function giveStaging(buf: GPUBuffer): void {
  if (stagingPooledBytes + buf.size > STAGING_POOL_BYTES) {
    buf.destroy();
    return;
  }
  stagingPooledBytes += buf.size;
  const list = stagingFree.get(buf.size);
  if (list) list.push(buf);
  else stagingFree.set(buf.size, [buf]);
}

/**
 * Copies `bytes` bytes at `byteOffset` of a sub-buffer back to the CPU: the one place that
 * awaits. The copy is recorded at once; the submit happens at the end of the current task,
 * shared with every other readback recorded in it.
 */
export async function readback(
  op: string,
  buf: GpuBuf,
  byteOffset: number,
  bytes: number,
): Promise<ArrayBuffer> {
  const device = gpuDevice(op);
  const start = Math.floor(byteOffset / 4) * 4;
  const size = Math.max(4, Math.ceil((byteOffset + bytes - start) / 4) * 4);
  const staging = takeStaging(device, op, size);
  let reusable = false;
  try {
    copyBuffer(buf, start, staging, 0, size);
    readbackCheck?.beforeSubmit();
    await flushSoon();
    // The check maps buffers of its own: both waits at once (see `sync`).
    const [mapped, checked] = await Promise.allSettled([
      staging.mapAsync(MAP_READ, 0, size),
      readbackCheck?.afterSubmit(),
    ]);
    if (mapped.status === "rejected") {
      await errorsSettled();
      throwPendingGpuError(op);
      throw mapped.reason;
    }
    const skip = byteOffset - start;
    const out = staging.getMappedRange(0, size).slice(skip, skip + bytes);
    staging.unmap();
    reusable = true;
    await errorsSettled();
    throwPendingGpuError(op);
    if (checked.status === "rejected") throw checked.reason;
    return out;
  } finally {
    if (reusable) giveStaging(staging);
    else staging.destroy();
  }
}

/** Forgets cached bind groups that bind a slab about to be destroyed. */
export function forgetSlab(slab: Slab): void {
  for (const key of keysBySlab.get(slab.id) ?? []) bindGroups.delete(key);
  keysBySlab.delete(slab.id);
}

/** Forgets the cached bind groups that use a texture (before it is destroyed). */
export function forgetTexture(t: GpuTex): void {
  for (const key of keysByTexture.get(t.id) ?? []) bindGroups.delete(key);
  keysByTexture.delete(t.id);
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
  readbackCheck?.beforeSubmit();
  flush();
  // The readback check maps buffers of its own. Deno's WebGPU (2.9.6) resolves every
  // onSubmittedWorkDone / mapAsync ~10 ms after the work is done (it polls, then sleeps), so
  // waiting for the queue and then for the check's buffers paid that twice: the wait and the
  // check now run at once (the tiny-K2 step's sync 11 ms shorter).
  const [done, checked] = await Promise.allSettled([
    gpuDevice("sync").queue.onSubmittedWorkDone(),
    readbackCheck?.afterSubmit(),
  ]);
  if (done.status === "rejected") throw done.reason;
  await errorsSettled();
  throwPendingGpuError("sync");
  if (checked.status === "rejected") throw checked.reason;
}

/** What `runtimeStats()` counts (since the start, or the last `resetRuntimeStats()`). */
export interface RuntimeStats {
  /** Compute dispatches recorded. */
  dispatches: number;
  /** Batches submitted (`queue.submit` calls). */
  submits: number;
  /** Bind groups created (~31 µs of createBindGroup each in Deno 2.9.6; 0 in a steady loop). */
  bindGroupsCreated: number;
  /** Scratch copies made because one sub-buffer was passed to two bindings. */
  aliasCopies: number;
  /** Pairs of dispatches recorded as one launch (core/colaunch.ts). */
  coLaunched: number;
  /** Dispatches recorded in the open batch. */
  pending: number;
}

/** Counters of recorded dispatches, submitted batches and created bind groups. */
export function runtimeStats(): RuntimeStats {
  return { ...stats, pending: dispatches + (held ? 1 : 0) };
}

/** Resets the counters of `runtimeStats()`. */
export function resetRuntimeStats(): void {
  stats = { dispatches: 0, submits: 0, bindGroupsCreated: 0, aliasCopies: 0, coLaunched: 0 };
}
