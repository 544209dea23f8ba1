/**
 * The WebGPU flag values moongrad uses, as numbers fixed by the WebGPU specification, so the
 * library needs no `GPUBufferUsage` / `GPUMapMode` / `GPUShaderStage` globals: Node with npm
 * `webgpu` (Dawn) has none, browsers and Deno do, and the values are the same everywhere.
 */

/** `GPUBufferUsage` bits. */
export const BufferUsage = Object.freeze({
  MAP_READ: 0x0001,
  COPY_SRC: 0x0004,
  COPY_DST: 0x0008,
  UNIFORM: 0x0040,
  STORAGE: 0x0080,
});

/** `GPUMapMode.READ`. */
export const MAP_READ = 0x0001;

/** `GPUShaderStage.COMPUTE`. */
export const COMPUTE_STAGE = 0x4;
