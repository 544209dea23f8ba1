/**
 * Soak: a bounded training run of a micro K2-style model (2 layers, MuonClip) checked for
 * host-memory growth and for the runtime counters that keep native memory bounded.
 *
 * The run happens in a subprocess (`deno run --v8-flags=--expose-gc` of this file), so its
 * RSS is its own and can be read after forced GCs. After WARMUP steps it trains MEASURED more,
 * reading memory every 10 steps, and reports the least-squares slope of the native memory
 * (RSS − V8's heapTotal: V8 grows its young generation in 16 MB steps now and then, which is
 * bounded and not what this test is about; measured here: +16 MB at step ~11 and +32 MB at
 * ~42 with heapUsed flat at 8 MB) and the bind groups, submits and dispatches of the measured
 * steps.
 *
 * Bounds and what they catch (lavapipe, Mesa 22.3, 2 cores; `deno task soak` has the long run):
 * - Native memory slope < 64 KB/step. Before prm() read parameters through a reserved zero word
 *   (core/kernel.ts), lavapipe recompiled the small kernels whose loops read uniform
 *   parameters at every submit and never freed the code: this micro run grew by 2,060 KB/step
 *   (measured on commit bd4de6b; with only the prm() change, 165 KB/step over these 60 steps,
 *   levelling off as bind-group churn reaches its plateau); now −9 to +10 KB/step.
 * - Bind groups created per measured step ≤ 0.05: tensors are sub-buffers of slabs bound with
 *   dynamic offsets (core/pool.ts), so a steady loop reuses every bind group (bd4de6b: 168
 *   per step here). A deterministic counter, unlike RSS.
 * - Submits per step ≤ ⌈dispatches / MAX_DISPATCHES_PER_BATCH⌉ + 2: readbacks of one task share
 *   one submit (bd4de6b: one submit per readback; 5 per step here, now 3).
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { KimiLM } from "../nn/model.ts";
import { makeConfig } from "../nn/config.ts";
import { MuonClip } from "../optim/mod.ts";
import { MAX_DISPATCHES_PER_BATCH, runtimeStats } from "../core/runtime.ts";

const WARMUP = 15;
const MEASURED = 60;
const BATCH = 2;
const SEQ = 16;

/** What the subprocess reports. */
interface SoakReport {
  /** Least-squares slope of RSS − heapTotal, KB per step. */
  nativeKBPerStep: number;
  /** RSS − heapTotal at each reading, MB. */
  nativeMB: number[];
  bindGroupsPerStep: number;
  submitsPerStep: number;
  dispatchesPerStep: number;
  adapter: string;
}

async function worker(): Promise<void> {
  const info = await mg.init();
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("soak worker needs --v8-flags=--expose-gc");
  const config = makeConfig({
    hidden_size: 64,
    intermediate_size: 128,
    moe_intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    n_routed_experts: 4,
    num_experts_per_tok: 2,
  });
  const model = new KimiLM(config, { seed: 0 });
  model.train();
  const opt = new MuonClip(model, { lr: 2e-2, tau: 100 });
  let s = 11;
  const token = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24;
  const step = async () => {
    const xs: number[][] = [], ys: number[][] = [];
    for (let b = 0; b < BATCH; b++) {
      const row = Array.from({ length: SEQ + 1 }, token);
      xs.push(row.slice(0, SEQ));
      ys.push(row.slice(1));
    }
    const stats = new mg.nn.StepStats();
    const loss = model.loss(xs, ys, { stats });
    loss.backward();
    await opt.step(stats);
    model.updateRouterBias(stats, 1e-3);
    await Promise.all([loss.item(), stats.read(model)]);
    stats.dispose();
    loss.dispose();
    opt.zeroGrad();
  };
  const rss = async () => {
    await mg.sync();
    gc();
    await new Promise((r) => setTimeout(r, 10));
    gc();
    const m = Deno.memoryUsage();
    return (m.rss - m.heapTotal) / 1024;
  };
  for (let i = 0; i < WARMUP; i++) await step();
  const points: [number, number][] = [[0, await rss()]];
  const before = runtimeStats();
  for (let i = 1; i <= MEASURED; i++) {
    await step();
    if (i % 10 === 0) points.push([i, await rss()]);
  }
  const after = runtimeStats();
  const n = points.length;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let num = 0, den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  const report: SoakReport = {
    nativeKBPerStep: num / den,
    nativeMB: points.map((p) => Math.round(p[1] / 102.4) / 10),
    bindGroupsPerStep: (after.bindGroupsCreated - before.bindGroupsCreated) / MEASURED,
    submitsPerStep: (after.submits - before.submits) / MEASURED,
    dispatchesPerStep: (after.dispatches - before.dispatches) / MEASURED,
    adapter: info.description,
  };
  console.log(`SOAK ${JSON.stringify(report)}`);
}

if (import.meta.main) {
  await worker();
  Deno.exit(0);
}

/** Runs the worker in a subprocess and returns its report. */
async function measure(): Promise<SoakReport> {
  // The subprocess measures Deno's own WebGPU on the machine's default Vulkan driver (the
  // configuration of issue 11's measurement).
  const env = Deno.env.toObject();
  env.XDG_RUNTIME_DIR ??= "/tmp";
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", new URL(import.meta.url).pathname],
    env,
    clearEnv: true,
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("SOAK "));
  assert.ok(
    line,
    `no report from the soak subprocess:\n${text}\n${new TextDecoder().decode(out.stderr)}`,
  );
  return JSON.parse(line.slice(5));
}

Deno.test({
  name:
    `soak: ${MEASURED} MuonClip steps of a micro K2 model after ${WARMUP}: native memory flat, no new bind groups, batched submits (subprocess)`,
  // Under the Dawn suite's preload this would measure the same thing again: the subprocess
  // runs Deno's own WebGPU either way (wgpu on SwiftShader has other limits — measured there:
  // 4.6 new bind groups and 213 KB per step, not yet bounded; see bench/RESULTS.md).
  ignore: Deno.env.get("MOONGRAD_ICD_SET_BY_DAWN_PRELOAD") !== undefined,
  fn: async () => {
    let r = await measure();
    // RSS slopes of a 60-step window are noisy on a loaded machine (measured once 64.3 KB/step
    // with 7 other jobs on 2 cores, flat in the rerun); a real leak (165 KB/step and more, see
    // above) shows in every run, so a slope over the bound is measured once more.
    if (r.nativeKBPerStep >= 64) r = await measure();
    const what = `${r.adapter}: RSS − V8 heap ${r.nativeMB.join(" → ")} MB, ` +
      `${r.nativeKBPerStep.toFixed(1)} KB/step, ` +
      `${r.bindGroupsPerStep} bind groups/step, ${r.submitsPerStep} submits/step, ` +
      `${r.dispatchesPerStep} dispatches/step`;
    assert.ok(r.nativeKBPerStep < 64, `native memory grows: ${what}`);
    assert.ok(r.bindGroupsPerStep <= 0.05, `new bind groups in steady state: ${what}`);
    const submitBound = Math.ceil(r.dispatchesPerStep / MAX_DISPATCHES_PER_BATCH) + 2;
    assert.ok(r.submitsPerStep <= submitBound, `submits/step above ${submitBound}: ${what}`);
  },
});
