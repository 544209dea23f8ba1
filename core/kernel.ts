/**
 * Kernel definitions, WGSL source generation (bindings, the uniform parameter block, and the
 * shared NaN/Inf helpers of core/special_wgsl.ts for kernels that call them), the pipeline
 * cache keyed by source text, and the compiler's verdict on each kernel.
 */
import { COMPUTE_STAGE } from "./webgpu_flags.ts";
import { gpuDevice, reportGpuError } from "./device.ts";
import { MoongradError } from "./errors.ts";
import { SPECIAL_WGSL } from "./special_wgsl.ts";
import type { ParamLayout } from "./params.ts";

/** How a kernel accesses one storage binding. */
export type Access = "read" | "read_write";

/** One storage-buffer binding of a kernel: `var<storage, access> name: array<type>`. */
export interface Binding {
  /** WGSL variable name. */
  name: string;
  /** WGSL element type (f32, f16, i32, u32, or atomic<u32> ...). */
  type: string;
  /** Read-only or read-write. */
  access: Access;
  /**
   * A texture instead of a storage buffer: "texture" is a `texture_2d<f32>` read with
   * `textureLoad(t, xy, 0)` (access "read"), "storage_texture_read" a read-only
   * `texture_storage_2d<rgba32float, read>` read with `textureLoad(t, xy)` (access "read"; its
   * GpuTex needs storage usage), "storage_texture" a write-only
   * `texture_storage_2d<rgba32float, write>` (access "read_write"). Texture bindings come
   * after every storage buffer binding; the runtime binds a GpuTex (core/textures.ts) there.
   */
  kind?: "texture" | "storage_texture_read" | "storage_texture";
}

/** What a kernel template function produces; the source text is the cache key. */
export interface KernelDef {
  /** Op name, used as the pipeline label and in error messages. */
  name: string;
  /** Storage bindings in binding order; the uniform parameter block follows them. */
  bindings: Binding[];
  /** Workgroup size (x, y, z). */
  workgroupSize: readonly [number, number?, number?];
  /** WGSL declarations placed before the entry point (helpers, workgroup arrays). */
  prelude?: string;
  /** Body of `fn main`, which has gid, lid, wid, nwg and lidx in scope. */
  body: string;
  /**
   * The kernel's parameter declaration (core/params.ts): its accessors (`p_rows()`,
   * `p_shape(i)`) go into the source; the host packs values with the same declaration.
   */
  params?: ParamLayout;
  /**
   * May share one launch with an independent neighbouring dispatch (core/colaunch.ts). The
   * runtime holds such a dispatch back until the next one is recorded.
   */
  pairable?: boolean;
  /**
   * Words of the uniform parameter block: PARAM_WORDS (the default) or WIDE_PARAM_WORDS (a
   * co-launch's two blocks, core/colaunch.ts). Word PARAM_ZERO_WORD is the zero word either way.
   */
  paramWords?: number;
}

/** A compiled compute pipeline with its explicit bind-group layout. */
export interface Kernel {
  /** Unique id used in bind-group cache keys. */
  readonly id: number;
  /** Op name. */
  readonly name: string;
  /** The pipeline. */
  readonly pipeline: GPUComputePipeline;
  /**
   * Its bind-group layout: storage bindings (the first `dynamicCount` with dynamic offsets),
   * then one dynamic-offset uniform.
   */
  readonly layout: GPUBindGroupLayout;
  /** Number of storage bindings. */
  readonly storageCount: number;
  /**
   * Storage bindings bound as whole slabs with a dynamic offset per dispatch: all of them, up
   * to the device's `maxDynamicStorageBuffersPerPipelineLayout`; the rest bind their
   * sub-buffer's range (see runtime.ts).
   */
  readonly dynamicCount: number;
  /** Declared access of each storage binding (all are bound read_write; see kernelSource). */
  readonly access: readonly Access[];
  /** Bytes of the uniform parameter block. */
  readonly paramBytes: number;
  /** The definition, kept for pairable kernels (core/colaunch.ts merges two of them). */
  readonly def?: KernelDef;
  /**
   * Set when the compiler or pipeline validation rejected this kernel (known asynchronously,
   * shortly after creation): the kernel's name, where it was created and the compiler's
   * messages. `dispatch` refuses a kernel that has one.
   */
  failure?: string;
}

/** What the WGSL compiler said about one kernel: errors and warnings, with the source line. */
export interface KernelDiagnostic {
  /** Kernel name. */
  kernel: string;
  /** "error" or "warning". */
  type: string;
  /** The compiler's message with line:column and the offending source line. */
  message: string;
}

/**
 * Size of the uniform parameter block in u32 words. Kernels read words 0 … PARAM_WORDS − 2
 * by name, through the accessors their declaration generates (core/params.ts: `p_rows()`,
 * `p_shape(i)`); the last word is reserved and always 0 (see `PARAM_ZERO_WORD`).
 */
export const PARAM_WORDS = 64;

/**
 * The reserved parameter word, always 0: every parameter accessor reads word i through
 * `param_word(i)`, which reads word `i + params[PARAM_ZERO_WORD]`.
 * The compiler cannot prove the index constant, so no parameter read is a uniform load at a
 * constant offset. That matters on Mesa's lavapipe (22.3, the CPU adapter in CI): it "inlines
 * uniforms", recompiling a small shader whose loop or branch conditions read constant-offset
 * uniforms with the values of each command buffer, and never frees the code: measured 450 KB
 * of RSS and ~3.5 ms per submit that contained the narrow matmul kernel, 1.8 MB per training
 * step of the tiny K2 model, the whole of its RSS growth. The cost elsewhere is one uniform
 * load and an add per parameter read, outside the inner loops of every kernel here.
 */
export const PARAM_ZERO_WORD = PARAM_WORDS - 1;

/** The wide parameter block of a co-launched kernel: two blocks' words (core/colaunch.ts). */
export const WIDE_PARAM_WORDS = 2 * PARAM_WORDS;

/**
 * Parameter reads a kernel body or prelude must not make itself: only the accessors generated
 * from its declaration touch the uniform block (by name, through the zero word).
 */
const POSITIONAL_READ = /\bparam_word\s*\(|\bparams\s*\.\s*w\b|\bprm[fi]?\s*\(/;

const cache = new Map<string, Kernel>();
let nextId = 1;
const diagnostics: KernelDiagnostic[] = [];
const pendingChecks = new Set<Promise<void>>();

/**
 * Builds the full WGSL source of a kernel definition. Every storage binding is declared
 * `read_write`, whatever its declared access: tensors are sub-buffers of shared slabs
 * (core/pool.ts), so one dispatch may read one sub-buffer of a slab and write another, and
 * WebGPU tracks usage per buffer (read-only and writable storage usage of one buffer in one
 * dispatch is a validation error in wgpu and Dawn alike). `access` stays the documented
 * intent; the runtime uses it when one sub-buffer is passed to two bindings.
 */
export function kernelSource(def: KernelDef): string {
  // Comments may mention f16 without using it; only code enables the extension.
  const code = (def.body + (def.prelude ?? "")).replace(/\/\/[^\n]*/g, "");
  const usesF16 = def.bindings.some((b) => b.type.includes("f16")) || /\bf16\b/.test(code);
  const lines: string[] = [];
  if (usesF16) lines.push("enable f16;");
  def.bindings.forEach((b, i) => {
    lines.push(
      b.kind === "texture"
        ? `@group(0) @binding(${i}) var ${b.name}: texture_2d<f32>;`
        : b.kind === "storage_texture_read"
        ? `@group(0) @binding(${i}) var ${b.name}: texture_storage_2d<rgba32float, read>;`
        : b.kind === "storage_texture"
        ? `@group(0) @binding(${i}) var ${b.name}: texture_storage_2d<rgba32float, write>;`
        : `@group(0) @binding(${i}) var<storage, read_write> ${b.name}: array<${b.type}>;`,
    );
  });
  lines.push(
    `struct Params { w: array<vec4<u32>, ${(def.paramWords ?? PARAM_WORDS) / 4}> }`,
    `@group(0) @binding(${def.bindings.length}) var<uniform> params: Params;`,
    `fn param_word(i: u32) -> u32 { let j = i + params.w[${PARAM_ZERO_WORD >> 2}][${
      PARAM_ZERO_WORD & 3
    }]; return params.w[j >> 2u][j & 3u]; }`,
  );
  if (def.params) lines.push(def.params.wgsl);
  // The NaN/Inf helpers go into the kernels that call them (any mg_ name: MATH_WGSL's use them).
  if (/\bmg_\w+\(/.test(code)) lines.push(SPECIAL_WGSL);
  if (def.prelude) lines.push(def.prelude);
  const [x, y = 1, z = 1] = def.workgroupSize;
  lines.push(
    `@compute @workgroup_size(${x}, ${y}, ${z})`,
    "fn main(@builtin(global_invocation_id) gid: vec3<u32>,",
    "        @builtin(local_invocation_id) lid: vec3<u32>,",
    "        @builtin(workgroup_id) wid: vec3<u32>,",
    "        @builtin(num_workgroups) nwg: vec3<u32>,",
    "        @builtin(local_invocation_index) lidx: u32) {",
    def.body,
    "}",
  );
  return lines.join("\n");
}

/** Kernels by a caller's key (see `kernelFor`). */
const keyed = new Map<string, Kernel>();

/**
 * The kernel a generator `make` defines, looked up by `key` before the definition is built:
 * for generators called on every dispatch (the matmul template), so that a hit costs one
 * short-string lookup instead of generating and hashing the whole WGSL source (tiny-K2
 * training step on lavapipe: ~15 ms of the ~30 ms the main thread spends recording).
 * `key` must determine the definition completely (every input of `make`).
 */
export function kernelFor(key: string, make: () => KernelDef): Kernel {
  const hit = keyed.get(key);
  if (hit) return hit;
  const k = kernel(make());
  keyed.set(key, k);
  return k;
}

/** Returns the compiled kernel for a definition, compiling it once per distinct source text. */
export function kernel(def: KernelDef): Kernel {
  const source = kernelSource(def);
  const hit = cache.get(source);
  if (hit) return hit;
  const positional = (def.body + (def.prelude ?? "")).match(POSITIONAL_READ);
  if (positional) {
    throw new MoongradError(
      def.name,
      `kernel reads parameters positionally (${positional[0]}); declare them with params() ` +
        "(core/params.ts) and read them by name",
    );
  }
  const device = gpuDevice(def.name);
  const buffers = def.bindings.findIndex((b) => b.kind !== undefined);
  if (buffers >= 0 && def.bindings.slice(buffers).some((b) => b.kind === undefined)) {
    throw new MoongradError(def.name, "texture bindings must follow every storage buffer binding");
  }
  const dynamicCount = Math.min(
    buffers >= 0 ? buffers : def.bindings.length,
    device.limits.maxDynamicStorageBuffersPerPipelineLayout ?? 4,
  );
  const entries: GPUBindGroupLayoutEntry[] = def.bindings.map((_, i) => ({
    binding: i,
    visibility: COMPUTE_STAGE,
    ...(def.bindings[i].kind === "texture"
      ? { texture: { sampleType: "unfilterable-float", viewDimension: "2d" } as const }
      : def.bindings[i].kind === "storage_texture_read" ||
          def.bindings[i].kind === "storage_texture"
      ? {
        storageTexture: {
          access: def.bindings[i].kind === "storage_texture" ? "write-only" : "read-only",
          format: "rgba32float",
          viewDimension: "2d",
        } as const,
      }
      : { buffer: { type: "storage", hasDynamicOffset: i < dynamicCount } as const }),
  }));
  entries.push({
    binding: def.bindings.length,
    visibility: COMPUTE_STAGE,
    buffer: {
      type: "uniform",
      hasDynamicOffset: true,
      minBindingSize: (def.paramWords ?? PARAM_WORDS) * 4,
    },
  });
  device.pushErrorScope("validation");
  const layout = device.createBindGroupLayout({ label: def.name, entries });
  const module = device.createShaderModule({ label: def.name, code: source });
  const pipeline = device.createComputePipeline({
    label: def.name,
    layout: device.createPipelineLayout({ label: def.name, bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: "main" },
  });
  const validation = device.popErrorScope();
  const k: Kernel = {
    id: nextId++,
    name: def.name,
    pipeline,
    layout,
    storageCount: def.bindings.length,
    dynamicCount,
    access: def.bindings.map((b) => b.access),
    paramBytes: (def.paramWords ?? PARAM_WORDS) * 4,
    ...(def.pairable ? { def } : {}),
  };
  cache.set(source, k);
  const where = creationSite(new Error().stack ?? "");
  const check = checkKernel(k, source, module, validation, where).finally(() =>
    pendingChecks.delete(check)
  );
  pendingChecks.add(check);
  return k;
}

/** The first stack frame outside core/: the op that asked for the kernel. */
function creationSite(stack: string): string {
  const frames = stack.split("\n").slice(1).map((l) => l.trim());
  const frame = frames.find((f) => !/\/core\/[a-z_]+\.ts/.test(f)) ?? frames[0] ?? "";
  return frame.replace(/^at /, "").replace(
    /file:\/\/\/?[^)]*?\/((ops|nn|optim|io|cli|tests)\/)/,
    "$1",
  );
}

async function checkKernel(
  k: Kernel,
  source: string,
  module: GPUShaderModule,
  validation: Promise<GPUError | null>,
  where: string,
): Promise<void> {
  const [info, error] = await Promise.all([
    module.getCompilationInfo().catch(() => null),
    validation.catch((e: unknown) => e as GPUError),
  ]);
  const lines = source.split("\n");
  const messages: string[] = [];
  for (const m of info?.messages ?? []) {
    if (m.type === "info") continue;
    const text = `${m.type} at ${m.lineNum}:${m.linePos}: ${m.message}` +
      (m.lineNum > 0 ? ` | ${lines[m.lineNum - 1]?.trim() ?? ""}` : "");
    diagnostics.push({ kernel: k.name, type: m.type, message: text });
    if (m.type === "error") messages.push(text);
  }
  if (error && !messages.length) messages.push(error.message);
  if (!messages.length) return;
  k.failure = `kernel "${k.name}" (created by ${where}) failed to compile: ${messages.join("; ")}`;
  reportGpuError(k.failure);
}

/**
 * Waits until the compiler has reported on every kernel created so far (readbacks call it so
 * a compile error is reported by name before the generic errors it causes).
 */
export async function kernelChecksDone(): Promise<void> {
  while (pendingChecks.size) await Promise.all([...pendingChecks]);
}

/** Errors and warnings the WGSL compiler reported for kernels created so far. */
export function kernelDiagnostics(): KernelDiagnostic[] {
  return diagnostics.slice();
}

/** Throws when the compiler rejected this kernel (so a broken kernel is never dispatched). */
export function assertKernelUsable(k: Kernel): void {
  if (k.failure) throw new MoongradError(k.name, k.failure);
}

/** Number of distinct kernels compiled so far. */
export function compiledKernelCount(): number {
  return cache.size;
}

/** Full WGSL sources of the kernels compiled so far, by kernel name (tests scan them). */
export function compiledKernelSources(): { name: string; source: string }[] {
  return [...cache].map(([source, k]) => ({ name: k.name, source }));
}

/** Names of the kernels compiled so far (one entry per distinct name). */
export function compiledKernelNames(): Set<string> {
  return new Set([...cache.values()].map((k) => k.name));
}
