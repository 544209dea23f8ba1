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
 * read, jax-js `blockUntilReady` on the list of results — its way to wait for several arrays).
 *
 *   deno task bench bench/ops_bench.ts
 */
import * as mg from "../mod.ts";
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
    impls: impls(
      [[N], [N], [N]],
      ([a, b, c]) => addMul(a, b, c),
      (tf, [a, b, c]) => tf.mul(tf.add(a, b), c),
      (_jax, [a, b, c]) => a.add(b).mul(c),
      perWait,
    ),
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
