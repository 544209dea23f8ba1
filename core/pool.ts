import { BufferUsage } from "./webgpu_flags.ts";
import { gpuDevice } from "./device.ts";

/**
 * A pooled GPU buffer with the bookkeeping the runtime needs.
 *
 * @example The buffer behind a tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.zeros([3]);
 * const buf: mg.GpuBuf = x.storage().buf;
 * console.log(buf.size >= 12, buf.buffer instanceof GPUBuffer); // true true
 * ```
 */
export interface GpuBuf {
  /** The WebGPU buffer (STORAGE | COPY_SRC | COPY_DST). */
  readonly buffer: GPUBuffer;
  /** Its byte size (a size class, not the requested size). */
  readonly size: number;
  /** Unique id, used to key cached bind groups. */
  readonly id: number;
  /** The batch that last recorded work using this buffer (see runtime.ts). */
  lastBatch: number;
}

/** Byte counts reported by `memory()`. */
export interface PoolStats {
  /** Bytes of every GPU buffer the pool has created and not destroyed. */
  allocatedBytes: number;
  /** Bytes of buffers held by live storage. */
  inUseBytes: number;
  /** Bytes of free buffers kept for reuse. */
  pooledBytes: number;
}

const free = new Map<number, GpuBuf[]>();
let nextId = 1;
let allocatedBytes = 0;
let inUseBytes = 0;

/** Size class for a request: at least 256 bytes, four classes per power of two (≤ 25 % waste). */
export function sizeClass(bytes: number): number {
  const n = Math.max(256, Math.ceil(bytes / 4) * 4);
  const top = 2 ** Math.floor(Math.log2(n));
  const step = Math.max(top / 4, 4);
  return Math.ceil(n / step) * step;
}

/** Takes a buffer of at least `bytes` from the pool, creating one when none is free. */
export function acquire(bytes: number): GpuBuf {
  const size = sizeClass(bytes);
  const list = free.get(size);
  let buf = list?.pop();
  if (!buf) {
    const buffer = gpuDevice("alloc").createBuffer({
      size,
      usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST,
    });
    buf = { buffer, size, id: nextId++, lastBatch: -1 };
    allocatedBytes += size;
  }
  inUseBytes += size;
  return buf;
}

/** Returns a buffer to the pool. Recorded work may still read it; see runtime `upload`. */
export function release(buf: GpuBuf): void {
  inUseBytes -= buf.size;
  const list = free.get(buf.size);
  if (list) list.push(buf);
  else free.set(buf.size, [buf]);
}

/** Destroys every pooled (free) buffer. Call `flush()` first if work may still use them. */
export function destroyPooled(onDestroy: (buf: GpuBuf) => void): void {
  for (const list of free.values()) {
    for (const b of list) {
      onDestroy(b);
      b.buffer.destroy();
      allocatedBytes -= b.size;
    }
  }
  free.clear();
}

/** Current byte counts of the pool. */
export function poolStats(): PoolStats {
  return { allocatedBytes, inUseBytes, pooledBytes: allocatedBytes - inUseBytes };
}
