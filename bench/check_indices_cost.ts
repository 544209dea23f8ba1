/**
 * Cost of the GPU index check (ops/check_indices.ts) on a training step of the tiny K2 model:
 * forward + loss + backward + MuonClip step + reading the loss, batch 4 × 64 tokens, with the
 * check on and off, alternating step by step so both see the same machine load. Prints the
 * dispatches per step and the median step time of each setting.
 *
 *   deno run -A --preload cli/task_env.ts bench/check_indices_cost.ts [steps]
 */
import * as mg from "../mod.ts";
import { runtimeStats } from "../core/runtime.ts";

const info = await mg.init();
const steps = Number(Deno.args[0] ?? 10);
const model = new mg.nn.KimiLM("tiny", { seed: 1 });
model.train();
const opt = new mg.optim.MuonClip(model, { lr: 2e-2, tau: 100 });
const B = 4, T = 64;
const ids: number[][] = [];
for (let b = 0; b < B; b++) {
  ids.push(Array.from({ length: T + 1 }, (_, t) => (b * 31 + t * 7) % 256));
}
const x = mg.tensor(ids.map((r) => r.slice(0, T)), { dtype: "i32" });
const y = mg.tensor(ids.map((r) => r.slice(1)), { dtype: "i32" });

async function step(): Promise<{ ms: number; dispatches: number }> {
  const d0 = runtimeStats().dispatches;
  const t0 = performance.now();
  const stats = new mg.nn.StepStats();
  const loss = model.loss(x, y, { stats });
  loss.backward();
  await opt.step(stats);
  opt.zeroGrad();
  await loss.item();
  loss.dispose();
  stats.dispose();
  return { ms: performance.now() - t0, dispatches: runtimeStats().dispatches - d0 };
}

const times: Record<"on" | "off", number[]> = { on: [], off: [] };
const disp: Record<"on" | "off", number> = { on: 0, off: 0 };
for (let i = 0; i < 2; i++) await step(); // warm-up: pipelines compiled
for (let i = 0; i < 2 * steps; i++) {
  const mode = i % 2 === 0 ? "on" : "off";
  mg.setCheckIndices(mode === "on");
  const r = await step();
  times[mode].push(r.ms);
  disp[mode] = r.dispatches;
}
mg.setCheckIndices(true);
const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
console.log(`${info.description}: tiny K2 training step, batch ${B}×${T}, ${steps} steps each`);
for (const mode of ["on", "off"] as const) {
  console.log(
    `check ${mode.padEnd(3)}: ${disp[mode]} dispatches/step, median ${
      median(times[mode]).toFixed(1)
    } ms ` +
      `(min ${Math.min(...times[mode]).toFixed(1)}, max ${Math.max(...times[mode]).toFixed(1)})`,
  );
}
