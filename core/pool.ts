import { BufferUsage } from "./webgpu_flags.ts";
import { gpuDevice } from "./device.ts";
import { MoongradError } from "./errors.ts";
import { callerOp } from "./limits.ts";

/**
 * GPU memory pool: size classes, each served by a few slabs. A slab is one GPUBuffer carved
 * into `capacity` equal sub-buffers of its class; a tensor's storage is one sub-buffer
 * (`GpuBuf`: the slab's buffer, a byte offset, the class size).
 *
 * Why slabs. With one GPUBuffer per tensor, bind groups are keyed by the buffers they bind,
 * pooled buffers cycle, and a training step of the tiny K2 model created ~640 new bind groups
 * (~31 µs of createBindGroup each, and native memory until the GC collects them). With slabs,
 * kernels bind whole slabs with dynamic offsets (core/runtime.ts), so a bind group is keyed by
 * (kernel, slab of each binding): the number of bind groups is bounded by kernels × slab
 * combinations, and steady-state training creates none (bench/soak.ts, tests/soak_test.ts).
 *
 * Layout. Size classes are multiples of 256 bytes (four per power of two from 1 KiB up, ≤ 25 %
 * waste; 256/512/768 below), so every sub-buffer offset is a multiple of 256, which satisfies
 * `minStorageBufferOffsetAlignment` on every adapter (the specification caps it at 256). The
 * n-th slab of a class holds max(2, ⌊256 KiB / class⌋)·2ⁿ sub-buffers, at most 64 MiB (or
 * `maxBufferSize`) per slab, at least one: a class needs O(log n) slabs for n live tensors, and
 * classes above 32 MiB get one buffer per slab. Acquire takes a free sub-buffer from the
 * oldest slab that has one (most recently freed first within it), so live tensors crowd into
 * few slabs and the same program makes the same choices every step.
 *
 * Costs. A new slab is zero-filled once with `queue.writeBuffer` (Deno 2.9.6's wgpu tracks lazy
 * zero-initialisation per bound range and ignores dynamic offsets: without this, a sub-buffer
 * written by a kernel through a dynamic offset and read in a later submit reads back zeros —
 * measured). `memory().allocatedBytes` counts whole slabs, so it includes never-used slots
 * (`pooledBytes` = allocated − in use): doubling slabs allocate up to ~2× a class's peak, plus
 * up to 256 KiB per class in use (tiny K2 training: 45.8 MB allocated for a 26 MB peak, against
 * 25 MB with a buffer per tensor). `emptyCache()` destroys the slabs with no tensor in them.
 */

/**
 * One GPUBuffer holding `capacity` sub-buffers of one size class.
 *
 * @example The slab behind a tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const slab: mg.Slab = mg.zeros([3]).storage().buf.slab;
 * console.log(slab.classSize * slab.capacity === slab.buffer.size); // true
 * ```
 */
export interface Slab {
  /** Unique id, used to key cached bind groups. */
  readonly id: number;
  /** The WebGPU buffer (STORAGE | COPY_SRC | COPY_DST). */
  readonly buffer: GPUBuffer;
  /** Bytes of each sub-buffer (the size class). */
  readonly classSize: number;
  /** Number of sub-buffers. */
  readonly capacity: number;
  /** Sub-buffers handed out at least once (slots 0 … made-1). */
  made: number;
  /** Handed-out sub-buffers now free. */
  readonly free: GpuBuf[];
}

/**
 * A tensor's GPU memory: a sub-buffer of a slab, with the bookkeeping the runtime needs.
 *
 * @example Where a tensor's bytes live
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const buf: mg.GpuBuf = mg.zeros([3]).storage().buf;
 * console.log(buf.size >= 12, buf.offset % 256); // true 0
 * ```
 */
export interface GpuBuf {
  /** The slab's WebGPU buffer, shared with the slab's other sub-buffers. */
  readonly buffer: GPUBuffer;
  /** Byte offset of this sub-buffer in `buffer` (a multiple of 256). */
  readonly offset: number;
  /** Its byte size (a size class, not the requested size). */
  readonly size: number;
  /** Unique id of the sub-buffer. */
  readonly id: number;
  /** The slab it belongs to. */
  readonly slab: Slab;
  /** The batch that last recorded work using this sub-buffer (see runtime.ts). */
  lastBatch: number;
}

/** Byte counts reported by `memory()`. */
export interface PoolStats {
  /** Bytes of every slab the pool has created and not destroyed. */
  allocatedBytes: number;
  /** Bytes of sub-buffers held by live storage. */
  inUseBytes: number;
  /** Bytes of free sub-buffers (freed or never used) kept for reuse. */
  pooledBytes: number;
}

/** Slab bytes the first slab of a small class aims at. */
const SLAB_MIN_BYTES = 256 * 1024;
/** Largest slab (a class above half of it gets one or two sub-buffers per slab). */
const SLAB_MAX_BYTES = 64 * 1024 * 1024;
/** Chunk of zeros for the initial fill. */
const ZERO_CHUNK = 1024 * 1024;

const classes = new Map<number, Slab[]>();
let nextBufId = 1;
let nextSlabId = 1;
let allocatedBytes = 0;
let inUseBytes = 0;
let zeros: Uint8Array<ArrayBuffer> | null = null;

/**
 * Size class for a request: at least 256 bytes, a multiple of 256; four classes per power of
 * two from 1 KiB (≤ 25 % waste), 256/512/768 below.
 */
export function sizeClass(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes / 4) * 4);
  const top = 2 ** Math.floor(Math.log2(n));
  const step = Math.max(top / 4, 256);
  return Math.ceil(n / step) * step;
}

/** Sub-buffers of the `index`-th slab of a class (see the header). */
export function slabCapacity(classSize: number, index: number, maxBufferSize: number): number {
  const first = Math.max(2, Math.floor(SLAB_MIN_BYTES / classSize));
  const most = Math.max(1, Math.floor(Math.min(SLAB_MAX_BYTES, maxBufferSize) / classSize));
  return Math.min(first * 2 ** Math.min(index, 30), most);
}

function newSlab(classSize: number, index: number): Slab {
  const device = gpuDevice("alloc");
  const capacity = slabCapacity(classSize, index, device.limits.maxBufferSize);
  const bytes = classSize * capacity;
  const buffer = device.createBuffer({
    label: `moongrad slab ${classSize} B × ${capacity}`,
    size: bytes,
    usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST,
  });
  // Nothing recorded uses a new buffer, so writing ahead of the open encoder is safe.
  zeros ??= new Uint8Array(ZERO_CHUNK);
  for (let o = 0; o < bytes; o += ZERO_CHUNK) {
    device.queue.writeBuffer(buffer, o, zeros, 0, Math.min(ZERO_CHUNK, bytes - o));
  }
  allocatedBytes += bytes;
  return { id: nextSlabId++, buffer, classSize, capacity, made: 0, free: [] };
}

function take(s: Slab): GpuBuf | undefined {
  const b = s.free.pop();
  if (b || s.made === s.capacity) return b;
  const offset = s.made++ * s.classSize;
  return { buffer: s.buffer, offset, size: s.classSize, id: nextBufId++, slab: s, lastBatch: -1 };
}

/** Takes a sub-buffer of at least `bytes` from the pool, creating a slab when none is free. */
export function acquire(bytes: number): GpuBuf {
  const limits = gpuDevice("alloc").limits;
  let size = sizeClass(bytes);
  const most = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  if (size > most) {
    size = Math.ceil(bytes / 256) * 256; // a request just under the limit whose class is above
    if (size > most) {
      throw new MoongradError(
        callerOp(),
        `a buffer of ${bytes} bytes exceeds this device's largest storage binding ` +
          `(maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}, ` +
          `maxBufferSize ${limits.maxBufferSize})`,
      );
    }
  }
  let slabs = classes.get(size);
  if (!slabs) classes.set(size, slabs = []);
  let buf: GpuBuf | undefined;
  for (const s of slabs) if ((buf = take(s))) break;
  if (!buf) {
    const s = newSlab(size, slabs.length);
    slabs.push(s);
    buf = take(s)!;
  }
  inUseBytes += size;
  return buf;
}

/**
 * A buffer outside the pool, for the runtime's own small state (the index-check flags of
 * ops/check_indices.ts): its own one-slot slab with a unique id, zero-filled, never freed, and
 * not counted by `memory()` (it holds no tensor).
 */
export function standaloneBuffer(label: string, bytes: number): GpuBuf {
  const device = gpuDevice("alloc");
  const size = Math.ceil(bytes / 256) * 256;
  const buffer = device.createBuffer({
    label: `moongrad ${label}`,
    size,
    usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST,
  });
  const slab: Slab = { id: nextSlabId++, buffer, classSize: size, capacity: 1, made: 1, free: [] };
  return { buffer, offset: 0, size, id: nextBufId++, slab, lastBatch: -1 };
}

/** Returns a sub-buffer to its slab. Recorded work may still read it; see runtime `upload`. */
export function release(buf: GpuBuf): void {
  inUseBytes -= buf.size;
  buf.slab.free.push(buf);
}

/** Destroys every slab with no sub-buffer in use. Call `flush()` first if work may use them. */
export function destroyPooled(onDestroy: (slab: Slab) => void): void {
  for (const [size, slabs] of classes) {
    const kept = slabs.filter((s) => {
      if (s.free.length !== s.made) return true;
      onDestroy(s);
      s.buffer.destroy();
      allocatedBytes -= s.capacity * s.classSize;
      return false;
    });
    if (kept.length) classes.set(size, kept);
    else classes.delete(size);
  }
}

/** Current byte counts of the pool. */
export function poolStats(): PoolStats {
  return { allocatedBytes, inUseBytes, pooledBytes: allocatedBytes - inUseBytes };
}

/** One line of `slabStats()`. */
export interface SlabStat {
  /** Slab id. */
  id: number;
  /** Bytes of each sub-buffer. */
  classSize: number;
  /** Sub-buffers in the slab. */
  capacity: number;
  /** Sub-buffers now held by tensors. */
  inUse: number;
}

/** Every live slab, by class and creation order (tests and the soak bench read it). */
export function slabStats(): SlabStat[] {
  const out: SlabStat[] = [];
  for (const [classSize, slabs] of [...classes].sort((a, b) => a[0] - b[0])) {
    for (const s of slabs) {
      out.push({ id: s.id, classSize, capacity: s.capacity, inUse: s.made - s.free.length });
    }
  }
  return out;
}
