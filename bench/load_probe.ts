/**
 * What one memory read costs inside a WGSL loop on this adapter, by kind: a storage buffer
 * read at a per-invocation address and at a workgroup-uniform address, the same from a
 * uniform buffer and from an rgba32float texture (`textureLoad`), a per-invocation read of
 * one bound as a read-only storage texture, and no read at all. Each
 * kernel runs 4096 workgroups of 8 invocations; each invocation does 256 steps of one vec4
 * read + one vec4 FMA (8 per loop iteration, written out). Prints ms (min of 3) and ns per
 * invocation-read. Why it exists: on Mesa lavapipe 22.3 every storage read inside control
 * flow is a scalar loop over the 8 SIMD lanes with a bounds branch per lane (gallivm), so a
 * tiled matmul is bound by its read count, not by its FMAs (bench/RESULTS.md, "matmul on the
 * CPU adapter"). Measured 2026-12-03: lavapipe 2.2–2.4 ns per read (1.5 without one), but
 * 1.7–1.8 ns from the read-only storage texture; SwiftShader (Dawn) the other way round,
 * 7.1 ns sampled against 8.6 ns (1024 workgroups). Raw WebGPU, no moongrad code.
 *
 *   deno run -A --preload cli/task_env.ts bench/load_probe.ts
 */
const adapter = await navigator.gpu.requestAdapter();
if (!adapter) throw new Error("load_probe: no WebGPU adapter");
const device = await adapter.requestDevice();
const W = 256; // texels per row (1024 floats)
const H = 1024;
const STEPS = 256;
const GROUPS = 4096;
const buf = device.createBuffer({ size: W * H * 16, usage: GPUBufferUsage.STORAGE });
const ubuf = device.createBuffer({ size: 65536, usage: GPUBufferUsage.UNIFORM });
const out = device.createBuffer({ size: GROUPS * 8 * 16, usage: GPUBufferUsage.STORAGE });
const tex = device.createTexture({
  size: [W, H],
  format: "rgba32float",
  usage: GPUTextureUsage.TEXTURE_BINDING,
});
// Storage usage may change the driver's layout: the storage-texture read gets its own texture.
const stex = device.createTexture({
  size: [W, H],
  format: "rgba32float",
  usage: GPUTextureUsage.STORAGE_BINDING,
});
const STORAGE = "@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;";
const UNIFORM = "@group(0) @binding(0) var<uniform> U: array<vec4<f32>, 4096>;";
const TEXTURE = "@group(0) @binding(0) var T: texture_2d<f32>;";
const STORAGE_TEXTURE = "@group(0) @binding(0) var T: texture_storage_2d<rgba32float, read>;";
const shader = (read: string, decl: string, tail = "") => {
  const steps = [...Array(8).keys()]
    .map((u) => `    { let k = k0 + ${u}u; acc = fma(${read}, vec4<f32>(1.0001), acc); }`)
    .join("\n");
  return `${decl}
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
  var acc = vec4<f32>(0.0);
  let row = g.x % ${H}u;
  for (var k0 = 0u; k0 < ${STEPS}u; k0 += 8u) {
${steps}
  }
  o[g.x] = acc${tail};
}`;
};
const kinds: [string, string, GPUBindingResource][] = [
  ["no read", shader("vec4<f32>(f32(k))", STORAGE, " + A[g.x]"), { buffer: buf }],
  ["storage, per-lane address", shader(`A[row * ${W}u + k]`, STORAGE), { buffer: buf }],
  ["storage, uniform address", shader(`A[w.x % ${H}u * ${W}u + k]`, STORAGE), { buffer: buf }],
  ["uniform buffer, per-lane", shader("U[(row * 16u + k) % 4096u]", UNIFORM), { buffer: ubuf }],
  ["uniform buffer, uniform", shader("U[(w.x * 16u + k) % 4096u]", UNIFORM), { buffer: ubuf }],
  ["texture, per-lane", shader("textureLoad(T, vec2<u32>(k, row), 0)", TEXTURE), tex.createView()],
  [
    "texture, uniform",
    shader(`textureLoad(T, vec2<u32>(k, w.x % ${H}u), 0)`, TEXTURE),
    tex.createView(),
  ],
  [
    "storage texture, per-lane",
    shader("textureLoad(T, vec2<u32>(k, row))", STORAGE_TEXTURE),
    stex.createView(),
  ],
];
console.log(`read cost on ${adapter.info?.description || "(adapter)"}`);
for (const [name, code, res] of kinds) {
  const module = device.createShaderModule({ code });
  const pipe = device.createComputePipeline({ layout: "auto", compute: { module } });
  const bg = device.createBindGroup({
    layout: pipe.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: res }, { binding: 1, resource: { buffer: out } }],
  });
  const run = async () => {
    const enc = device.createCommandEncoder();
    const p = enc.beginComputePass();
    p.setPipeline(pipe);
    p.setBindGroup(0, bg);
    p.dispatchWorkgroups(GROUPS);
    p.end();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run();
  const ts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await run();
    ts.push(performance.now() - t);
  }
  const ms = Math.min(...ts);
  const ns = (ms * 1e6) / (GROUPS * 8 * STEPS);
  console.log(`${name.padEnd(28)} ${ms.toFixed(1).padStart(7)} ms  ${ns.toFixed(2)} ns/read`);
}
