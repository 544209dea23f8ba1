/**
 * `deno task demo`: prints the adapter, runs a matmul + softmax on the GPU, checks it against
 * a float64 CPU computation, and measures matmul throughput.
 */
import * as mg from "../mod.ts";
import { parseFlags } from "./args.ts";
import { CliError, runMain } from "./errors.ts";

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

async function main(): Promise<void> {
  const { flags, positionals } = parseFlags(Deno.args, {
    help: { type: "boolean", short: "h", help: "show this help" },
  }, 1);
  if (flags.help) {
    console.log(
      "Usage: deno task demo [SIZE]\n\nPrints the WebGPU adapter, checks a matmul + softmax " +
        "against a float64 CPU computation and times a SIZE³ matmul (default 512).",
    );
    return;
  }
  const raw = positionals[0] ?? "512";
  const size = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!(size >= 1 && size <= 8192)) {
    throw new CliError(`SIZE must be an integer from 1 to 8192, got "${raw}"`);
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
  console.log(
    `matmul ${size}³ f32: ${(seconds * 1000).toFixed(1)} ms, ${gflops.toFixed(2)} GFLOP/s`,
  );
  if (!ok) throw new Error(`GPU result differs from the CPU reference by ${maxErr}`);
}

if (import.meta.main) await runMain("demo", main);
