/**
 * rgba32float textures that kernels read operands through (`textureLoad`), for the CPU
 * adapters' matmul (ops/matmul_texture.ts): on Mesa's llvmpipe a texel fetch is a vector
 * gather, while every storage-buffer read inside control flow is a scalar loop over the SIMD
 * lanes with a bounds branch per lane (bench/load_probe.ts), so a tiled product reading its
 * operands from textures runs ~2× faster at 1024³ (bench/RESULTS.md).
 *
 * A pool keyed by size: `acquireTexture` hands out a texture (created on first use) and
 * `releaseTexture` returns it at once after the dispatch that reads it is recorded — recorded
 * work runs in order, so the next writer of a texture runs after its last reader. The pool
 * keeps what it created until `emptyCache()` (core/memory.ts) destroys it.
 */
import { gpuDevice } from "./device.ts";

/** GPUTextureUsage bits (not referenced through the global, which Node's Dawn may lack). */
const COPY_DST = 0x02;
const TEXTURE_BINDING = 0x04;
const STORAGE_BINDING = 0x08;

/** One pooled texture: a kernel binds it where its definition declares a texture binding. */
export interface GpuTex {
  /** The texture (rgba32float, 2-D). */
  readonly texture: GPUTexture;
  /** Its default view. */
  readonly view: GPUTextureView;
  /** Unique id (bind-group cache keys). */
  readonly id: number;
  /** Width in texels (4 floats each). */
  readonly width: number;
  /** Height in texels. */
  readonly height: number;
  /**
   * Whether it has storage usage: kernels may bind it as a storage texture, write-only (a
   * pack target) or read-only (operand reads on adapters where those are the cheaper fetch).
   */
  readonly storage: boolean;
  /** The batch that last recorded work using it (see core/runtime.ts). */
  lastBatch: number;
}

const free = new Map<string, GpuTex[]>();
const all = new Set<GpuTex>();
let nextId = 1;

/**
 * A width × height rgba32float texture that kernels may read (`texture_2d<f32>`) and, with
 * `storage`, bind as a storage texture (`texture_storage_2d<rgba32float, write>` or `read>`);
 * without it only copies fill it. Return it with `releaseTexture`. Ask for `storage` only
 * where a kernel binds it so: drivers may lay out textures with storage usage differently
 * (lavapipe: a sampled read of one is slower, raw 1024³ texture product 37–38 ms without the
 * usage against 42–43 ms with it in 4 of 5 alternating pairs, 2026-12-03; a read-only storage
 * read of one is faster, see ops/matmul_texture.ts).
 *
 * @example
 * ```ts
 * import * as mg from "../mod.ts";
 * import { acquireTexture, releaseTexture } from "./textures.ts";
 * await mg.init();
 * const t = acquireTexture(4, 2, true);
 * console.log(t.width * t.height, t.storage); // 8 true
 * releaseTexture(t);
 * ```
 */
export function acquireTexture(width: number, height: number, storage: boolean): GpuTex {
  const hit = free.get(poolKey(width, height, storage))?.pop();
  if (hit) return hit;
  const texture = gpuDevice("texture").createTexture({
    label: `moongrad operand texture ${width}×${height}${storage ? " (storage)" : ""}`,
    size: [width, height],
    format: "rgba32float",
    usage: COPY_DST | TEXTURE_BINDING | (storage ? STORAGE_BINDING : 0),
  });
  const t: GpuTex = {
    texture,
    view: texture.createView(),
    id: nextId++,
    width,
    height,
    storage,
    lastBatch: -1,
  };
  all.add(t);
  return t;
}

/** The pool a texture of this size and usage lives in. */
function poolKey(width: number, height: number, storage: boolean): string {
  return `${width}x${height}${storage ? "s" : ""}`;
}

/** Returns a texture to the pool (recorded work that reads it still runs first). */
export function releaseTexture(t: GpuTex): void {
  const key = poolKey(t.width, t.height, t.storage);
  const list = free.get(key);
  if (list) list.push(t);
  else free.set(key, [t]);
}

/**
 * Destroys the pooled textures that are not handed out; returns them so the caller can forget
 * bind groups that use them. Call `flush()` first if recorded work may use them.
 */
export function destroyFreeTextures(): GpuTex[] {
  const gone: GpuTex[] = [];
  for (const list of free.values()) {
    for (const t of list) {
      t.texture.destroy();
      all.delete(t);
      gone.push(t);
    }
  }
  free.clear();
  return gone;
}
