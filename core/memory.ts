import { destroyPooled, poolStats } from "./pool.ts";
import { flush, forgetSlab, sync } from "./runtime.ts";
import { liveTensorCount } from "./tensor.ts";

/** GPU memory in use, as `memory()` reports it. */
export interface MemoryStats {
  /** Bytes of all GPU buffers held by the pool (in use + pooled). */
  allocatedBytes: number;
  /** Bytes of buffers backing live tensors. */
  inUseBytes: number;
  /** Bytes of free buffers kept for reuse. */
  pooledBytes: number;
  /** Tensor handles not yet disposed. */
  liveTensors: number;
}

/** Current GPU memory use and live tensor count. */
export function memory(): MemoryStats {
  return { ...poolStats(), liveTensors: liveTensorCount() };
}

/** Submits pending work and destroys every slab with no tensor in it. */
export function emptyCache(): void {
  flush();
  destroyPooled(forgetSlab);
}

export { sync };
