/**
 * Kernel definitions, WGSL source generation (bindings, the uniform parameter block, and the
 * shared NaN/Inf helpers of core/special_wgsl.ts for kernels that call them) and the pipeline
 * cache keyed by source text.
 */
import { gpuDevice } from "./device.ts";
import { SPECIAL_WGSL } from "./special_wgsl.ts";

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
}

/** A compiled compute pipeline with its explicit bind-group layout. */
export interface Kernel {
  /** Unique id used in bind-group cache keys. */
  readonly id: number;
  /** Op name. */
  readonly name: string;
  /** The pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind-group layout: storage bindings, then one dynamic-offset uniform. */
  readonly layout: GPUBindGroupLayout;
  /** Number of storage bindings. */
  readonly storageCount: number;
  /** Bytes of the uniform parameter block. */
  readonly paramBytes: number;
}

/** Number of u32 parameter words every kernel may read through `prm(i)`. */
export const PARAM_WORDS = 64;

const cache = new Map<string, Kernel>();
let nextId = 1;

/** Builds the full WGSL source of a kernel definition. */
export function kernelSource(def: KernelDef): string {
  // Comments may mention f16 without using it; only code enables the extension.
  const code = (def.body + (def.prelude ?? "")).replace(/\/\/[^\n]*/g, "");
  const usesF16 = def.bindings.some((b) => b.type.includes("f16")) || /\bf16\b/.test(code);
  const lines: string[] = [];
  if (usesF16) lines.push("enable f16;");
  def.bindings.forEach((b, i) => {
    lines.push(`@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${b.type}>;`);
  });
  lines.push(
    `struct Params { w: array<vec4<u32>, ${PARAM_WORDS / 4}> }`,
    `@group(0) @binding(${def.bindings.length}) var<uniform> params: Params;`,
    "fn prm(i: u32) -> u32 { return params.w[i >> 2u][i & 3u]; }",
    "fn prmf(i: u32) -> f32 { return bitcast<f32>(prm(i)); }",
    "fn prmi(i: u32) -> i32 { return bitcast<i32>(prm(i)); }",
  );
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

/** Returns the compiled kernel for a definition, compiling it once per distinct source text. */
export function kernel(def: KernelDef): Kernel {
  const source = kernelSource(def);
  const hit = cache.get(source);
  if (hit) return hit;
  const device = gpuDevice(def.name);
  const entries: GPUBindGroupLayoutEntry[] = def.bindings.map((b, i) => ({
    binding: i,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: b.access === "read" ? "read-only-storage" : "storage" },
  }));
  entries.push({
    binding: def.bindings.length,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: PARAM_WORDS * 4 },
  });
  const layout = device.createBindGroupLayout({ label: def.name, entries });
  const module = device.createShaderModule({ label: def.name, code: source });
  const pipeline = device.createComputePipeline({
    label: def.name,
    layout: device.createPipelineLayout({ label: def.name, bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: "main" },
  });
  const k: Kernel = {
    id: nextId++,
    name: def.name,
    pipeline,
    layout,
    storageCount: def.bindings.length,
    paramBytes: PARAM_WORDS * 4,
  };
  cache.set(source, k);
  return k;
}

/** Number of distinct kernels compiled so far. */
export function compiledKernelCount(): number {
  return cache.size;
}

/** Packs kernel parameters (integers as u32/i32 bits, floats as f32 bits) into u32 words. */
export class Params {
  /** The packed words, PARAM_WORDS long. */
  readonly words: Uint32Array = new Uint32Array(PARAM_WORDS);
  private readonly f32 = new Float32Array(this.words.buffer);
  private readonly i32 = new Int32Array(this.words.buffer);
  private n = 0;

  private room(count: number): void {
    if (this.n + count > PARAM_WORDS) {
      throw new Error(`kernel parameters exceed ${PARAM_WORDS} words (rank too large?)`);
    }
  }

  /** Appends unsigned integers. */
  u(...values: number[]): this {
    this.room(values.length);
    for (const v of values) this.words[this.n++] = v >>> 0;
    return this;
  }
  /** Appends signed integers. */
  i(...values: number[]): this {
    this.room(values.length);
    for (const v of values) this.i32[this.n++] = v;
    return this;
  }
  /** Appends f32 values. */
  f(...values: number[]): this {
    this.room(values.length);
    for (const v of values) this.f32[this.n++] = v;
    return this;
  }
  /** Index of the next word to be written. */
  get length(): number {
    return this.n;
  }
}
