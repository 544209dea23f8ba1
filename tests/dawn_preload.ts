/**
 * Preloaded by `deno task test:dawn`: initialises moongrad on Dawn (Chrome's WebGPU, WGSL
 * compiler Tint) from npm `webgpu` before any test module runs, so the same suite that runs on
 * Deno's wgpu/naga runs on Dawn/Tint. On headless Linux Dawn runs on the SwiftShader Vulkan
 * driver of Debian's `chromium` package (this file sets `VK_ICD_FILENAMES` to it unless it is already set).
 */
import { init } from "../mod.ts";

// Tests that only run CLI subprocesses (Deno's own WebGPU, not Dawn) skip themselves here.
Deno.env.set("MOONGRAD_SUITE", "dawn");

const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (!Deno.env.get("VK_ICD_FILENAMES")) {
  try {
    Deno.statSync(SWIFTSHADER);
    Deno.env.set("VK_ICD_FILENAMES", SWIFTSHADER);
    // Subprocesses that test Deno's own WebGPU (tests/soak_test.ts) drop it again.
    Deno.env.set("MOONGRAD_ICD_SET_BY_DAWN_PRELOAD", "1");
  } catch {
    console.warn(`test:dawn: ${SWIFTSHADER} not found (apt-get install -y chromium)`);
  }
}
// A dynamic import with a full specifier: only this task fetches Dawn.
// deno-lint-ignore no-import-prefix
const { create } = await import("npm:webgpu@0.6.2");
const info = await init({ gpu: create(["backend=vulkan"]) });
if (!/swiftshader|dawn|vulkan/i.test(`${info.description} ${info.vendor} ${info.architecture}`)) {
  console.warn(`test:dawn: unexpected adapter ${info.description} (${info.vendor})`);
}
