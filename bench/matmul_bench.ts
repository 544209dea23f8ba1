/**
 * matmul f32 throughput. Every timed iteration waits for the GPU (`await mg.sync()`), so the
 * numbers are execution time, not recording time. GFLOP/s (2·B·M·N·K / time) is printed once
 * per size from a timed loop of its own, then `Deno.bench` reports the same work.
 *
 *   deno bench -A bench/matmul_bench.ts
 */
import * as mg from "../mod.ts";

const info = await mg.init();

interface Case {
  name: string;
  a: number[];
  b: number[];
  flops: number;
  /** Iterations for Deno.bench (the large sizes take seconds on CPU adapters). */
  n: number;
}

function square(s: number, n: number): Case {
  return { name: `${s}x${s}x${s}`, a: [s, s], b: [s, s], flops: 2 * s ** 3, n };
}

const cases: Case[] = [
  square(256, 20),
  square(512, 5),
  square(1024, 3),
  // Batched, non-square: 8 × ([192, 320] @ [320, 96]) with B transposed-in-place.
  {
    name: "8x192x320x96 (b transposed view)",
    a: [8, 192, 320],
    b: [8, 96, 320],
    flops: 2 * 8 * 192 * 320 * 96,
    n: 10,
  },
];

/** The operands of a case and a function that records one product. */
function operands(c: Case): { tensors: mg.Tensor[]; run: () => mg.Tensor } {
  const a = mg.randn(c.a, { seed: 1 });
  const b = mg.randn(c.b, { seed: 2 });
  const bt = c.a.length === 3 ? b.transpose() : b;
  return { tensors: [a, b, bt], run: () => mg.matmul(a, bt) };
}

/** Times `run` (with completion) for at least `minMs` and 2 iterations; returns ms/iter. */
async function time(run: () => mg.Tensor, minMs: number): Promise<number> {
  run().dispose();
  await mg.sync();
  let iters = 0;
  const t0 = performance.now();
  while (iters < 2 || performance.now() - t0 < minMs) {
    run().dispose();
    await mg.sync();
    iters++;
  }
  return (performance.now() - t0) / iters;
}

console.log(`matmul f32 on ${info.description}`);
for (const c of cases) {
  const { tensors, run } = operands(c);
  const ms = await time(run, 1000);
  console.log(
    `  ${c.name.padEnd(34)} ${ms.toFixed(2).padStart(9)} ms  ${
      (c.flops / ms / 1e6).toFixed(2).padStart(8)
    } GFLOP/s`,
  );
  for (const t of new Set(tensors)) t.dispose();
}

for (const c of cases) {
  const { run } = operands(c);
  Deno.bench({
    name: `moongrad ${c.name}`,
    group: "matmul f32",
    n: c.n,
    warmup: 1,
    async fn() {
      run().dispose();
      await mg.sync();
    },
  });
}
