/**
 * Memory-bound ops, moongrad beside TensorFlow.js (WebGPU) and jax-js (WebGPU): softmax over
 * the last axis, an elementwise chain `(a + b) * c`, and RMSNorm `x · rsqrt(mean(x²) + ε) · w`.
 * moongrad uses its fused kernels (softmax, rmsNorm) and `mg.fuse` for the chain (one kernel);
 * tfjs composes its ops (it has no fused RMSNorm); jax-js runs each as one `jit` function (its
 * idiomatic fast path, which fuses what it can). GB/s count the minimal traffic: every input
 * read once and the output written once (f32). Every timed iteration waits for the GPU. The
 * chain and RMSNorm run twice: one op per wait (latency: each op also pays the queue round
 * trip, ~10 ms on Deno's wgpu, identical for every library) and PIPELINED independent ops per
 * wait (throughput, how a training loop issues work: moongrad `mg.sync()`, tfjs a one-value
 * jax-js `blockUntilReady` on the list of results — its way to wait for several arrays).
 * The chain's groups also time its floor on this adapter, "raw WGSL": the same chain as one
 * hand-written kernel recorded straight onto moongrad's device (no library around it), so each
 * run shows how far moongrad's fused kernel is from the least a WebGPU kernel costs here, and
 * what ratio against the peers that floor itself reaches.
 *
 *   deno task bench bench/ops_bench.ts
 */
import * as mg from "../mod.ts";
import { gpuDevice } from "../core/device.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import { benchCase, type Impl } from "./harness.ts";
import { type Jax, loadJax, loadTfjs, type Tfjs, tfSync, values } from "./peers.ts";

const info = await mg.init();
const tfl = await loadTfjs();
const jxl = await loadJax();
const [R, C] = [1024, 1024];
const N = R * C;
const EPS = 1e-6;

type MgOp = (xs: mg.Tensor[]) => mg.Tensor;
// deno-lint-ignore no-explicit-any
type TfOp = (tf: Tfjs, xs: any[]) => any;
// deno-lint-ignore no-explicit-any
type JaxOp = (jax: Jax, xs: any[]) => any;

/**
 * The three implementations of one op over inputs of the given shapes. One timed iteration
 * records the op `perWait` times (independent results, all kept until the end) and then waits
 * once for the GPU: 1 measures latency (each op pays the queue round trip), more measures
 * throughput (how a training loop runs, many kernels in flight per wait).
 */
function impls(
  shapes: number[][],
  mgOp: MgOp,
  tfOp: TfOp,
  jaxOp: JaxOp,
  perWait = 1,
): Impl[] {
  const reps = [...Array(perWait).keys()];
  const vals = shapes.map((s, i) => values(s.reduce((a, b) => a * b, 1), i + 1));
  return [
    {
      lib: "moongrad",
      prepare: () => {
        const xs = vals.map((v, i) => mg.tensor(v, { shape: shapes[i] }));
        return Promise.resolve({
          async run() {
            const ys = reps.map(() => mgOp(xs));
            await mg.sync();
            for (const y of ys) y.dispose();
          },
          async result() {
            const y = mgOp(xs);
            const d = await y.data();
            y.dispose();
            return d;
          },
        });
      },
    },
    {
      lib: "tfjs-webgpu",
      prepare: () => {
        if (!tfl.ok) return Promise.resolve(tfl.why);
        const tf = tfl.lib;
        const xs = vals.map((v, i) => tf.tensor(v, shapes[i]));
        // tf.tidy frees the intermediates of a composed op.
        const op = () => tf.tidy(() => tfOp(tf, xs));
        return Promise.resolve({
          async run() {
            const ys = reps.map(() => op());
            await tfSync(tf);
            for (const y of ys) y.dispose();
          },
          async result() {
            const y = op();
            const d = await y.data();
            y.dispose();
            return d;
          },
        });
      },
    },
    {
      lib: "jax-js",
      prepare: () => {
        if (!jxl.ok) return Promise.resolve(jxl.why);
        const jax = jxl.lib;
        const xs = vals.map((v, i) => jax.numpy.array(v).reshape(shapes[i]));
        // deno-lint-ignore no-explicit-any
        const f = jax.jit((...args: any[]) => jaxOp(jax, args));
        // jit functions take ownership of their arguments: pass `.ref` to keep the inputs.
        const op = () => f(...xs.map((x) => x.ref));
        return Promise.resolve({
          async run() {
            const ys = reps.map(() => op());
            await jax.blockUntilReady(ys); // jax-js's way to wait for several arrays
            for (const y of ys) y.dispose();
          },
          async result() {
            return await op().data();
          },
        });
      },
    },
  ];
}

/** WGSL of (a + b) · c, one vec4 per invocation, 256-thread workgroups, an exact grid. */
const RAW_ADD_MUL = `
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> c: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let i = w.x * 256u + l;
  y[i] = (a[i] + b[i]) * c[i];
}`;

/**
 * The floor of `(a + b) * c` over `n` f32 (a multiple of 1024, at most 65535 · 1024): the chain
 * as one hand-written kernel on moongrad's device, `perWait` dispatches (distinct outputs) in
 * one pass and one submit, then the queue's wait. No parameters, no bounds check, no library.
 */
function rawAddMul(n: number, perWait: number): Impl {
  return {
    lib: "raw WGSL",
    prepare: () => {
      const device = gpuDevice("bench");
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const buffer = () => device.createBuffer({ size: 4 * n, usage });
      const ins = [1, 2, 3].map((seed) => {
        const b = buffer();
        device.queue.writeBuffer(b, 0, values(n, seed));
        return b;
      });
      const outs = Array.from({ length: perWait }, buffer);
      const module = device.createShaderModule({ code: RAW_ADD_MUL });
      const pipeline = device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      const groups = outs.map((y) =>
        device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: [...ins, y].map((buffer, binding) => ({ binding, resource: { buffer } })),
        })
      );
      const record = () => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        pass.setPipeline(pipeline);
        for (const g of groups) {
          pass.setBindGroup(0, g);
          pass.dispatchWorkgroups(n / 1024);
        }
        pass.end();
        return encoder;
      };
      return Promise.resolve({
        async run() {
          device.queue.submit([record().finish()]);
          await device.queue.onSubmittedWorkDone();
        },
        async result() {
          const encoder = record();
          const staging = device.createBuffer({
            size: 4 * n,
            usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
          });
          encoder.copyBufferToBuffer(outs[0], 0, staging, 0, 4 * n);
          device.queue.submit([encoder.finish()]);
          await staging.mapAsync(GPUMapMode.READ);
          const out = new Float32Array(staging.getMappedRange().slice(0));
          staging.unmap();
          staging.destroy();
          return out;
        },
      });
    },
  };
}

console.log(`memory-bound ops on ${info.description}`);
if (!tfl.ok) console.log(`  tfjs-webgpu unavailable: ${tfl.why}`);
if (!jxl.ok) console.log(`  jax-js unavailable: ${jxl.why}`);

await benchCase({
  group: `softmax f32 ${R}x${C}`,
  work: { bytes: 2 * 4 * N },
  n: 10,
  tol: 1e-5,
  impls: impls(
    [[R, C]],
    ([x]) => mg.softmax(x, -1),
    (tf, [x]) => tf.softmax(x),
    (jax, [x]) => jax.nn.softmax(x, -1),
  ),
});

// Both sides compile the chain once, outside the timed loop: moongrad with mg.fuse (one kernel,
// traced at the first call), jax-js with jit.
const addMul = mg.fuse((a, b, c) => a.add(b).mul(c), { name: "add_mul" });

// Each group twice: one op per GPU wait (latency: every library pays the queue round trip,
// ~10 ms on Deno's wgpu, see RESULTS.md) and PIPELINED ops per wait (throughput).
const PIPELINED = 8;
for (const perWait of [1, PIPELINED]) {
  const label = perWait === 1 ? "" : `, ${perWait} per wait`;
  await benchCase({
    group: `(a + b) * c f32 ${N}${label}`,
    work: { bytes: perWait * 4 * 4 * N },
    n: 10,
    tol: 1e-6,
    impls: [
      ...impls(
        [[N], [N], [N]],
        ([a, b, c]) => addMul(a, b, c),
        (tf, [a, b, c]) => tf.mul(tf.add(a, b), c),
        (_jax, [a, b, c]) => a.add(b).mul(c),
        perWait,
      ),
      rawAddMul(N, perWait),
    ],
  });

  await benchCase({
    group: `rmsnorm f32 ${R}x${C}${label}`,
    work: { bytes: perWait * 4 * (2 * N + C) },
    n: 10,
    tol: 1e-5,
    impls: impls(
      [[R, C], [C]],
      ([x, w]) => rmsNorm(x, w, EPS),
      (tf, [x, w]) => tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), EPS))), w),
      (jax, [x, w]) => {
        const np = jax.numpy;
        const ms = np.mean(np.square(x.ref), -1, { keepdims: true });
        return x.mul(np.reciprocal(np.sqrt(ms.add(EPS)))).mul(w);
      },
      perWait,
    ),
  });
}
