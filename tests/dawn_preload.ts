/**
 * Preloaded by `deno task test:dawn`: initialises moongrad on Dawn (Chrome's WebGPU, WGSL
 * compiler Tint) from npm `webgpu` before any test module runs, so the same suite that runs on
 * Deno's wgpu/naga runs on Dawn/Tint. On headless Linux Dawn runs on the SwiftShader Vulkan
 * driver of Debian's `chromium` package (the task sets `VK_ICD_FILENAMES`).
 */
import { init } from "../mod.ts";

// A dynamic import: only this task fetches Dawn.
// deno-lint-ignore no-import-prefix
const { create } = await import("npm:webgpu@0.6.2");
const info = await init({ gpu: create(["backend=vulkan"]) });
if (!/swiftshader|dawn|vulkan/i.test(`${info.description} ${info.vendor} ${info.architecture}`)) {
  console.warn(`test:dawn: unexpected adapter ${info.description} (${info.vendor})`);
}
