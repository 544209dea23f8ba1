/**
 * matmul throughput, moongrad beside TensorFlow.js (WebGPU backend), jax-js (WebGPU) and numpy
 * (OpenBLAS on the CPU, bench/numpy_peer.ts: f32 only), one harness group per size with
 * moongrad as the baseline. Every timed iteration waits for the GPU (moongrad:
 * `await mg.sync()`; the peers: see peers.ts), so the numbers are execution time, not
 * recording time; numpy's row is the time of `a @ b` measured inside Python
 * (`time.perf_counter`), one product per harness iteration. GFLOP/s = 2·B·M·N·K / mean time.
 * Each peer's output is checked once against moongrad's. On a CPU adapter the numpy row is
 * the yardstick (issue 14: moongrad's f32 1024³ at ≥ 0.2× numpy's throughput); the header
 * line names numpy's version and BLAS thread count.
 *
 * Sizes: square 256/512/1024, non-square 1024×256 @ 256×512, batched 8 × (192×320 @ 320×96)
 * with B given as a transposed view ([8, 96, 320] transposed; tfjs uses transposeB, jax-js a
 * transposed view), and f16 256/512 where the adapter has shader-f16 (tfjs has no f16).
 *
 *   deno task bench bench/matmul_bench.ts
 */
import * as mg from "../mod.ts";
import { benchCase, type Impl } from "./harness.ts";
import { loadJax, loadTfjs, tfSync, values } from "./peers.ts";
import { numpyPeer } from "./numpy_peer.ts";

const info = await mg.init();
const tfl = await loadTfjs();
const jxl = await loadJax();
const np = await numpyPeer();

interface MatmulCase {
  name: string;
  /** [B?, M, K] */
  a: number[];
  /** [B?, N, K] when transposed, else [K, N] */
  b: number[];
  transposeB: boolean;
  flops: number;
  n: number;
  dtype: "f32" | "f16";
}

function square(s: number, n: number, dtype: "f32" | "f16" = "f32"): MatmulCase {
  return {
    name: `${s}x${s}x${s}`,
    a: [s, s],
    b: [s, s],
    transposeB: false,
    flops: 2 * s ** 3,
    n,
    dtype,
  };
}

const cases: MatmulCase[] = [
  square(256, 10),
  square(512, 5),
  square(1024, 2),
  {
    name: "1024x256 @ 256x512",
    a: [1024, 256],
    b: [256, 512],
    transposeB: false,
    flops: 2 * 1024 * 256 * 512,
    n: 5,
    dtype: "f32",
  },
  {
    name: "8x192x320 @ (8x96x320)^T",
    a: [8, 192, 320],
    b: [8, 96, 320],
    transposeB: true,
    flops: 2 * 8 * 192 * 320 * 96,
    n: 10,
    dtype: "f32",
  },
];
if (info.f16) cases.push(square(256, 10, "f16"), square(512, 5, "f16"));

const size = (s: number[]) => s.reduce((x, y) => x * y, 1);

function impls(c: MatmulCase): Impl[] {
  const av = values(size(c.a), 1);
  const bv = values(size(c.b), 2);
  const list: Impl[] = [{
    lib: "moongrad",
    prepare: () => {
      const a = mg.tensor(av, { shape: c.a, dtype: c.dtype });
      const b0 = mg.tensor(bv, { shape: c.b, dtype: c.dtype });
      const b = c.transposeB ? b0.transpose() : b0;
      return Promise.resolve({
        async run() {
          mg.matmul(a, b).dispose();
          await mg.sync();
        },
        async result() {
          const y = mg.matmul(a, b);
          const d = await y.data();
          y.dispose();
          return d;
        },
      });
    },
  }];
  list.push({
    lib: "tfjs-webgpu",
    prepare: () => {
      if (!tfl.ok) return Promise.resolve(tfl.why);
      if (c.dtype !== "f32") return Promise.resolve("tfjs has no f16 tensors");
      const tf = tfl.lib;
      const a = tf.tensor(av, c.a);
      const b = tf.tensor(bv, c.b);
      const mm = () => tf.matMul(a, b, false, c.transposeB);
      return Promise.resolve({
        async run() {
          mm().dispose();
          await tfSync(tf);
        },
        async result() {
          const y = mm();
          const d = await y.data();
          y.dispose();
          return d as Float32Array;
        },
      });
    },
  });
  list.push({
    lib: "jax-js",
    prepare: () => {
      if (!jxl.ok) return Promise.resolve(jxl.why);
      const jax = jxl.lib;
      const np = jax.numpy;
      const dt = c.dtype === "f16" ? np.float16 : np.float32;
      const a = np.array(av).reshape(c.a).astype(dt);
      const b0 = np.array(bv).reshape(c.b).astype(dt);
      const b = c.transposeB ? b0.transpose([0, 2, 1]) : b0;
      // jax-js functions take ownership of their arguments: pass `.ref` to keep a and b.
      const mm = () => np.matmul(a.ref, b.ref);
      return Promise.resolve({
        async run() {
          const y = mm();
          await jax.blockUntilReady(y);
          y.dispose();
        },
        async result() {
          return await mm().astype(np.float32).data() as Float32Array;
        },
      });
    },
  });
  list.push({
    lib: "numpy",
    prepare: async () => {
      if (typeof np === "string") return np;
      if (c.dtype !== "f32") return "numpy peer measures f32 only";
      const key = c.name;
      await np.load(key, av, c.a, bv, c.b, c.transposeB);
      return {
        // One product timed inside Python; the harness records Python's time, not the pipe's.
        run: async () => (await np.time(key, 1))[0],
        result: () => np.result(key),
      };
    },
  });
  return list;
}

console.log(`matmul on ${info.description}`);
if (!tfl.ok) console.log(`  tfjs-webgpu unavailable: ${tfl.why}`);
if (!jxl.ok) console.log(`  jax-js unavailable: ${jxl.why}`);
console.log(`  numpy: ${typeof np === "string" ? `unavailable: ${np}` : np.describe}`);
for (const c of cases) {
  await benchCase({
    group: `matmul ${c.dtype} ${c.name}`,
    work: { flops: c.flops },
    n: c.n,
    // f16 products of K ≈ 512 unit-range terms: ~1e-2 relative between two f16 kernels.
    tol: c.dtype === "f16" ? 2e-2 : 1e-4,
    impls: impls(c),
  });
}
if (typeof np !== "string") await np.close();
