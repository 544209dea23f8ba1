/**
 * Newton–Schulz, 5 quintic steps (Muon's orthogonalisation), moongrad only: no JS peer has it;
 * bench/torch_bench.py times the same iteration in PyTorch on the GPU machine. 1024² on a
 * hardware adapter, 256² on a CPU adapter (1024² takes tens of seconds there). GFLOP/s count
 * the nominal 3 products of 2n³ per step (moongrad's symmetric gram kernel does less work).
 * Every timed iteration waits for the GPU.
 *
 * The variants group times the standard quintic next to Polar Express (same cost per step:
 * only the coefficients differ) and Gram Newton–Schulz (iterates on the n×n Gram matrix of
 * an n×4n matrix: per step O(n³) instead of O(n²·4n), plus one restart and the final Q·X).
 *
 *   deno task bench bench/newton_schulz_bench.ts
 */
import * as mg from "../mod.ts";
import { newtonSchulz, type NewtonSchulzOptions } from "../optim/newton_schulz.ts";
import { polarExpressCoefficients } from "../optim/polar_express.ts";
import { benchCase } from "./harness.ts";
import { values } from "./peers.ts";

const info = await mg.init();
const n = info.isFallbackAdapter ? 256 : 1024;
console.log(`Newton-Schulz on ${info.description}`);

await benchCase({
  group: `newton-schulz 5 steps ${n}x${n}`,
  work: { flops: 5 * 3 * 2 * n ** 3 },
  n: 5,
  impls: [{
    lib: "moongrad",
    prepare: () => {
      const g = mg.tensor(values(n * n, 1), { shape: [n, n] });
      return Promise.resolve({
        async run() {
          newtonSchulz(g).dispose();
          await mg.sync();
        },
      });
    },
  }],
});

const w = n / 2;
const variants: [string, NewtonSchulzOptions][] = [
  ["quintic", {}],
  ["polar express", { coefficients: polarExpressCoefficients() }],
  ["gram quintic", { method: "gram" }],
  ["gram polar express", { method: "gram", coefficients: polarExpressCoefficients() }],
];
await benchCase({
  group: `newton-schulz variants 5 steps ${w}x${4 * w}`,
  work: { flops: 5 * 2 * (2 * w * w * 4 * w + w ** 3) },
  n: 5,
  impls: variants.map(([name, options]) => ({
    lib: `moongrad ${name}`,
    prepare: () => {
      const g = mg.tensor(values(4 * w * w, 2), { shape: [w, 4 * w] });
      return Promise.resolve({
        async run() {
          newtonSchulz(g, options).dispose();
          await mg.sync();
        },
      });
    },
  })),
});
