/**
 * `deno task demo`: prints the adapter, runs a matmul + softmax on the GPU, checks it against
 * a float64 CPU computation, and measures matmul throughput.
 */
import * as mg from "../mod.ts";

function cpuMatmulSoftmax(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
      out[i * n + j] = s;
    }
    let max = -Infinity;
    for (let j = 0; j < n; j++) max = Math.max(max, out[i * n + j]);
    let z = 0;
    for (let j = 0; j < n; j++) z += Math.exp(out[i * n + j] - max);
    for (let j = 0; j < n; j++) out[i * n + j] = Math.exp(out[i * n + j] - max) / z;
  }
  return out;
}

const info = await mg.init();
console.log(
  `adapter: ${info.description} (vendor ${info.vendor || "?"}${
    info.isFallbackAdapter ? ", software" : ""
  })`,
);
console.log(`features: ${info.features.join(", ") || "none"}`);

const [m, k, n] = [96, 80, 72];
const a = mg.randn([m, k], { seed: 1 });
const b = mg.randn([k, n], { seed: 2 });
const probs = a.matmul(b).softmax(-1);
const [av, bv, pv] = await Promise.all([a.data(), b.data(), probs.data()]);
const ref = cpuMatmulSoftmax(av as Float32Array, bv as Float32Array, m, k, n);
let maxErr = 0;
for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(pv[i] - ref[i]));
const ok = maxErr < 1e-5;
console.log(
  `matmul [${m}x${k}] @ [${k}x${n}] + softmax: max |GPU - CPU| = ${maxErr.toExponential(2)} ${
    ok ? "(ok)" : "(MISMATCH)"
  }`,
);

const size = Number(Deno.args[0] ?? 512);
const x = mg.randn([size, size], { seed: 3 });
const y = mg.randn([size, size], { seed: 4 });
mg.matmul(x, y).dispose();
await mg.sync();
const reps = 5;
const t0 = performance.now();
for (let i = 0; i < reps; i++) mg.matmul(x, y).dispose();
await mg.sync();
const seconds = (performance.now() - t0) / 1000 / reps;
const gflops = (2 * size ** 3) / seconds / 1e9;
console.log(`matmul ${size}³ f32: ${(seconds * 1000).toFixed(1)} ms, ${gflops.toFixed(2)} GFLOP/s`);
if (!ok) Deno.exit(1);
