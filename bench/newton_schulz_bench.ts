/**
 * Newton–Schulz, 5 quintic steps (Muon's orthogonalisation), moongrad only: no JS peer has it;
 * bench/torch_bench.py times the same iteration in PyTorch on the GPU machine. 1024² on a
 * hardware adapter, 256² on a CPU adapter (1024² takes tens of seconds there). GFLOP/s count
 * the nominal 3 products of 2n³ per step (moongrad's symmetric gram kernel does less work).
 * Every timed iteration waits for the GPU.
 *
 *   deno bench -A bench/newton_schulz_bench.ts
 */
import * as mg from "../mod.ts";
import { newtonSchulz } from "../optim/newton_schulz.ts";
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
