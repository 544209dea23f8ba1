/**
 * Tile-configuration sweep of the matmul kernel at one size (default 1024³ f32), each config
 * timed back to back with numpy (bench/numpy_peer.ts) so the ratio survives a noisy, shared
 * machine. For every config: compile + one warm-up, then `reps` rounds of (moongrad `iters`
 * products, numpy `iters` products); prints min and median ms of each and the ratio
 * numpy / moongrad per round (min and median). Configs are JSON on the command line, or the
 * built-in list.
 *
 *   deno run -A --preload cli/task_env.ts bench/matmul_sweep.ts [--size 1024] [--reps 3] \
 *     ['{"wgX":8,"wgY":1,"tm":16,"tn":16,"bk":4,"shared":false,"vec4":true}' ...]
 */
import * as mg from "../mod.ts";
import { CPU_MATMUL_CONFIG, GPU_MATMUL_CONFIG, type MatmulConfig } from "../ops/matmul.ts";
import { numpyPeer } from "./numpy_peer.ts";
import { values } from "./peers.ts";

const args = [...Deno.args];
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
};
const S = opt("--size", 1024);
const reps = opt("--reps", 3);
const iters = opt("--iters", 3);
const configs: MatmulConfig[] = args.length
  ? args.map((s) => ({ ...CPU_MATMUL_CONFIG, ...JSON.parse(s) }))
  : [
    CPU_MATMUL_CONFIG,
    GPU_MATMUL_CONFIG,
    { ...CPU_MATMUL_CONFIG, wgX: 8, wgY: 1, tm: 16, tn: 16 },
    { ...CPU_MATMUL_CONFIG, wgX: 8, wgY: 1, tm: 16, tn: 32 },
  ];

const info = await mg.init();
const np = await numpyPeer();
console.log(
  `matmul ${S}³ f32 sweep on ${info.description}; ${
    typeof np === "string" ? `numpy skipped: ${np}` : np.describe
  }`,
);
const av = values(S * S, 1);
const bv = values(S * S, 2);
const a = mg.tensor(av, { shape: [S, S] });
const b = mg.tensor(bv, { shape: [S, S] });
if (typeof np !== "string") await np.load("sq", av, [S, S], bv, [S, S], false);
const flops = 2 * S ** 3;
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
for (const c of configs) {
  mg.setMatmulConfig(c);
  const t0 = performance.now();
  mg.matmul(a, b).dispose();
  await mg.sync();
  const compile = performance.now() - t0;
  const mgT: number[] = [];
  const npT: number[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < reps; r++) {
    const m: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t = performance.now();
      mg.matmul(a, b).dispose();
      await mg.sync();
      m.push(performance.now() - t);
    }
    mgT.push(...m);
    if (typeof np !== "string") {
      const n = await np.time("sq", iters);
      npT.push(...n);
      ratios.push(med(n) / med(m));
    }
  }
  const g = (ms: number) => (flops / ms / 1e6).toFixed(1);
  console.log(
    `${JSON.stringify(c)}  first ${compile.toFixed(0)} ms | moongrad min ${
      Math.min(...mgT).toFixed(1)
    } med ${med(mgT).toFixed(1)} ms (${g(Math.min(...mgT))}/${g(med(mgT))} GFLOP/s)` +
      (npT.length
        ? ` | numpy min ${Math.min(...npT).toFixed(1)} med ${med(npT).toFixed(1)} ms | ratio min ${
          Math.min(...ratios).toFixed(3)
        } med ${med(ratios).toFixed(3)}`
        : ""),
  );
}
mg.setMatmulConfig(null);
if (typeof np !== "string") await np.close();
