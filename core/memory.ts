import { destroyPooled, poolStats } from "./pool.ts";
import { flush, forgetSlab, forgetTexture, sync } from "./runtime.ts";
import { destroyFreeTextures } from "./textures.ts";
import { liveTensorCount } from "./tensor.ts";

/**
 * GPU memory in use, as `memory()` reports it.
 *
 * @example Find a leak by counting live tensors
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const before: mg.MemoryStats = mg.memory();
 * mg.scope(() => mg.randn([64, 64], { seed: 1 }).exp().sum());
 * console.log(mg.memory().liveTensors - before.liveTensors); // 1 (the returned sum)
 * ```
 */
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

/**
 * Current GPU memory use and live tensor count.
 *
 * @example Bytes in use and pooled
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.zeros([1024, 1024]); // 4 MiB
 * console.log(mg.memory().inUseBytes >= 4 * 2 ** 20); // true
 * x.dispose(); // its buffer goes back to the pool
 * console.log(mg.memory().pooledBytes >= 4 * 2 ** 20); // true
 * ```
 */
export function memory(): MemoryStats {
  return { ...poolStats(), liveTensors: liveTensorCount() };
}

/**
 * Submits pending work and destroys every slab with no tensor in it (the pool carves buffers of
 * one size class out of shared slabs; see core/pool.ts).
 *
 * @example Give unused slabs back to the device
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * mg.zeros([1024, 1024]).dispose();
 * mg.emptyCache();
 * console.log(mg.memory().allocatedBytes); // only slabs that still hold tensors
 * ```
 */
export function emptyCache(): void {
  flush();
  destroyPooled(forgetSlab);
  for (const t of destroyFreeTextures()) forgetTexture(t);
}

export { sync };
