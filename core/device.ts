import { MoongradError } from "./errors.ts";

/**
 * What `init()` found: the adapter, the features in use and the limits granted.
 *
 * @example What init() found
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const info: mg.DeviceInfo = await mg.init();
 * console.log(info.description, info.isFallbackAdapter ? "(software)" : "");
 * console.log(info.f16, info.limits.maxStorageBufferBindingSize);
 * ```
 */
export interface DeviceInfo {
  /** Adapter description, e.g. "NVIDIA H100" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  description: string;
  /** Adapter vendor string. */
  vendor: string;
  /** Adapter architecture string (may be empty). */
  architecture: string;
  /** True for software (CPU) adapters. */
  isFallbackAdapter: boolean;
  /** Features requested on the device (shader-f16, timestamp-query when present). */
  features: string[];
  /** Limits granted to the device that moongrad relies on. */
  limits: {
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
    maxStorageBuffersPerShaderStage: number;
    /** Storage bindings per kernel that take dynamic offsets (the rest bind fixed ranges). */
    maxDynamicStorageBuffersPerPipelineLayout: number;
    minUniformBufferOffsetAlignment: number;
    minStorageBufferOffsetAlignment: number;
  };
  /** True when f16 tensors are available. */
  f16: boolean;
}

/**
 * Options for `init()`.
 *
 * @example Dawn (Chrome's WebGPU) in Node or Deno through npm `webgpu`
 * ```ts ignore
 * import { create } from "npm:webgpu@0.6.2";
 * await mg.init({ gpu: create(["backend=vulkan"]) });
 * ```
 * @example Share a page's device
 * ```ts ignore
 * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
 * await mg.init({ device });
 * ```
 */
export interface InitOptions {
  /** Adapter preference passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Ask for a software adapter. */
  forceFallbackAdapter?: boolean;
  /**
   * The WebGPU entry point to use instead of `navigator.gpu`: any `GPU` object, e.g. Dawn's
   * from npm `webgpu` (`create(["backend=vulkan"])`) in Node or Deno.
   */
  gpu?: GPU;
  /**
   * Adopt an existing device (a page that also renders with it) instead of requesting one.
   * moongrad then works within that device's limits and features; it never destroys it.
   */
  device?: GPUDevice;
}

interface DeviceState {
  device: GPUDevice;
  /**
   * The GPU object and adapter the device came from, kept alive with it: Dawn's npm binding
   * frees its native instance when the GPU object is garbage-collected, and a device that
   * outlives it crashes the process at its next event (measured: a segfault in
   * `InstanceBase::ProcessEvents` on the first readback in Deno 2.9.6 + webgpu 0.6.2).
   */
  owners: unknown[];
  info: DeviceInfo;
  lost: string | null;
  errors: string[];
  /** Kernels the compiler rejected: reported before the errors they cause. */
  kernelErrors: string[];
}

let state: DeviceState | null = null;
let pending: Promise<DeviceInfo> | null = null;
let runningOp = "(no op)";

const NO_ADAPTER =
  "no WebGPU adapter found. On a machine without a GPU install a software adapter: " +
  "`apt-get install -y mesa-vulkan-drivers` (Mesa lavapipe) on Debian/Ubuntu; Mesa's llvmpipe " +
  "through EGL also works. In a browser, use one with WebGPU enabled.";

/**
 * Picks one adapter, requests the limits and features moongrad needs, and returns what it found.
 *
 * @example Pick the adapter once, before creating tensors
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const info = await mg.init(); // later calls return the same device
 * console.log(`${info.description}: ${info.features.join(", ") || "no optional features"}`);
 * const x = mg.tensor([[1, 2], [3, 4]]);
 * console.log(await x.matmul(x).toArray()); // [[7, 10], [15, 22]]
 * ```
 */
export function init(options: InitOptions = {}): Promise<DeviceInfo> {
  if (state) return Promise.resolve(state.info);
  pending ??= create(options).finally(() => pending = null);
  return pending;
}

async function create(options: InitOptions): Promise<DeviceInfo> {
  if (options.device) return adopt(options.device, null, [options.gpu]);
  const gpu = options.gpu ?? (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new MoongradError("init", `navigator.gpu is missing: ${NO_ADAPTER}`);
  const adapter = await gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
    forceFallbackAdapter: options.forceFallbackAdapter,
  });
  if (!adapter) throw new MoongradError("init", NO_ADAPTER);
  const al = adapter.limits;
  const wanted = [...adapter.features].filter((f) => f === "shader-f16" || f === "timestamp-query");
  const requiredLimits: Record<string, number> = {
    maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
    maxBufferSize: al.maxBufferSize,
    maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
    maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
    // The CPU adapters' matmul reads its operands from textures (ops/matmul_texture.ts).
    maxTextureDimension2D: al.maxTextureDimension2D,
    // Tensors live in shared slabs bound with dynamic offsets (core/pool.ts): every storage
    // binding of a kernel up to this limit is keyed by slab, not by tensor.
    maxDynamicStorageBuffersPerPipelineLayout: al.maxDynamicStorageBuffersPerPipelineLayout,
    minUniformBufferOffsetAlignment: al.minUniformBufferOffsetAlignment,
    minStorageBufferOffsetAlignment: al.minStorageBufferOffsetAlignment,
  };
  const device = await adapter.requestDevice({
    label: "moongrad",
    requiredFeatures: wanted as GPUFeatureName[],
    requiredLimits,
  });
  return adopt(device, adapter.info, [gpu, adapter]);
}

/** PCI / Khronos vendor ids that some implementations report instead of a name. */
const VENDOR_IDS: Record<number, string> = {
  0x1002: "AMD",
  0x1010: "Imagination",
  0x106b: "Apple",
  0x10de: "NVIDIA",
  0x13b5: "ARM",
  0x1ae0: "Google",
  0x5143: "Qualcomm",
  0x8086: "Intel",
  0x10005: "Mesa",
};

/**
 * A readable vendor: wgpu reports Vulkan vendor ids as decimal strings (lavapipe: "65541",
 * Mesa's id 0x10005); known ids become names, names pass through.
 *
 * @example
 * ```ts ignore
 * vendorName("65541"); // "Mesa"
 * vendorName("4318"); // "NVIDIA"
 * ```
 */
export function vendorName(vendor: string): string {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(vendor)) return vendor;
  const id = Number(vendor);
  return VENDOR_IDS[id] ?? `vendor 0x${id.toString(16)}`;
}

/** Builds the state for a device: its info, and listeners that record loss and errors. */
function adopt(
  device: GPUDevice,
  adapterInfo: GPUAdapterInfo | null,
  owners: unknown[],
): DeviceInfo {
  const dl = device.limits;
  const ai = adapterInfo ?? (device as { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? {
    vendor: "",
    architecture: "",
    device: "",
    description: "",
  } as GPUAdapterInfo;
  const vendor = vendorName(ai.vendor);
  const info: DeviceInfo = {
    description: ai.description || ai.device ||
      [vendor, ai.architecture].filter(Boolean).join(" ") || "unknown adapter",
    vendor,
    architecture: ai.architecture,
    isFallbackAdapter: Boolean((ai as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    features: [...device.features],
    limits: {
      maxStorageBufferBindingSize: dl.maxStorageBufferBindingSize,
      maxBufferSize: dl.maxBufferSize,
      maxComputeWorkgroupStorageSize: dl.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: dl.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: dl.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: dl.maxStorageBuffersPerShaderStage,
      maxDynamicStorageBuffersPerPipelineLayout: dl.maxDynamicStorageBuffersPerPipelineLayout,
      minUniformBufferOffsetAlignment: dl.minUniformBufferOffsetAlignment,
      minStorageBufferOffsetAlignment: dl.minStorageBufferOffsetAlignment,
    },
    f16: device.features.has("shader-f16"),
  };
  const s: DeviceState = { device, owners, info, lost: null, errors: [], kernelErrors: [] };
  device.lost.then((l) => {
    s.lost = `device lost (${l.reason}): ${l.message} (while running ${runningOp})`;
  });
  device.addEventListener("uncapturederror", (e) => {
    const err = (e as GPUUncapturedErrorEvent).error;
    s.errors.push(
      `${err.constructor.name}: ${err.message} (outside a batch; last op ${runningOp})`,
    );
  });
  state = s;
  return info;
}

/** The device; throws when `init()` has not finished or the device was lost. */
export function gpuDevice(op = "device"): GPUDevice {
  if (!state) {
    throw new MoongradError(op, "no device: call `await mg.init()` before creating tensors");
  }
  if (state.lost) throw new MoongradError(op, state.lost);
  return state.device;
}

/**
 * The DeviceInfo of the initialised device; throws before `init()`.
 *
 * @example Branch on the adapter after init
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const dtype = mg.deviceInfo().f16 ? "f16" : "f32";
 * console.log(mg.zeros([2, 2], { dtype }).dtype === dtype); // true
 * ```
 */
export function deviceInfo(): DeviceInfo {
  if (!state) throw new MoongradError("deviceInfo", "call `await mg.init()` first");
  return state.info;
}

/** Records which op is recording GPU work, so asynchronous GPU errors can name it. */
export function setRunningOp(op: string): void {
  runningOp = op;
}

/**
 * Queues an error found asynchronously (a kernel the compiler rejected, or a batch's
 * validation error) to be thrown by the next readback or sync. Kernel failures come first.
 */
export function reportGpuError(message: string, kind: "kernel" | "batch" = "kernel"): void {
  if (!state) return;
  (kind === "kernel" ? state.kernelErrors : state.errors).push(message);
}

/** Throws the first GPU error reported since the last check (validation, out-of-memory, loss). */
export function throwPendingGpuError(op: string): void {
  if (!state) return;
  if (state.lost) throw new MoongradError(op, state.lost);
  const all = [...state.kernelErrors, ...state.errors];
  state.kernelErrors.length = 0;
  state.errors.length = 0;
  if (all.length) {
    const more = all.length - 1;
    throw new MoongradError(
      op,
      `GPU error reported while waiting for ${op}: ${all[0]}${more ? ` (+${more} more)` : ""}`,
    );
  }
}
