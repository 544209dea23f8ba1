/**
 * The Kimi K2 pieces on the tiny preset, moongrad only (no JS peer has MoE routing, Muon or
 * QK-Clip): the MoE block forward (route + plan + dispatch + grouped matmuls + combine), one
 * optimizer step (AdamW, Muon + AdamW, MuonClip) with gradients present, and one full training
 * step (forward + backward + AdamW or MuonClip step, batch 4 × 64, the step bench/torch_bench.py
 * times in PyTorch). Every timed iteration waits for the GPU
 * (`mg.sync()`). Throughput counts:
 * - MoE: 2·N·(H·E) for the router plus 3·2·N·K·H·I for the routed experts and 3·2·N·H·I_s for
 *   the shared experts (I_s = moe_intermediate_size · n_shared_experts);
 * - optimizer steps: GB/s of the minimal parameter + gradient + state traffic (AdamW: read p,
 *   g, m, v and write p, m, v = 28 bytes per parameter; Muon's Newton–Schulz products are
 *   extra work not counted);
 * - training step: the usual 6 · active parameters · tokens FLOP estimate (attention's
 *   T² terms not counted).
 *
 *   deno task bench bench/k2_bench.ts
 */
import * as mg from "../mod.ts";
import { makeConfig } from "../nn/config.ts";
import { DeepseekMoE } from "../nn/moe.ts";
import { KimiLM, parameterCounts } from "../nn/model.ts";
import { AdamW, MuonClip, MuonWithAdamW } from "../optim/mod.ts";
import { benchCase } from "./harness.ts";
import { values } from "./peers.ts";
import { trainingBatch, trainingStepGroup } from "./k2_common.ts";

const info = await mg.init();
console.log(`Kimi K2 pieces (tiny preset) on ${info.description}`);
const config = makeConfig("tiny");
const { total, active } = parameterCounts(config);

// ---- MoE block forward, 256 tokens ----
{
  const n = 256;
  const c = config;
  const h = c.hidden_size, e = c.n_routed_experts, k = c.num_experts_per_tok;
  const i = c.moe_intermediate_size, is = i * c.n_shared_experts;
  await benchCase({
    group: `MoE forward tiny ${n} tokens (E${e} K${k} H${h} I${i})`,
    work: { flops: 2 * n * h * e + 6 * n * k * h * i + 6 * n * h * is },
    n: 5,
    impls: [{
      lib: "moongrad",
      prepare: () => {
        const moe = new DeepseekMoE(c, { seed: 1 });
        moe.eval();
        const x = mg.tensor(values(n * h, 1), { shape: [1, n, h] });
        return Promise.resolve({
          async run() {
            mg.noGrad(() => moe.forward(x)).dispose();
            await mg.sync();
          },
        });
      },
    }],
  });
}

/** A tiny model (seed 1) with gradients from one batch (B×T, bench/k2_common.ts). */
function modelWithGrads(
  batch: number,
  seq: number,
): { model: KimiLM; x: mg.Tensor; y: mg.Tensor; stats: mg.nn.StepStats } {
  const model = new KimiLM(config, { seed: 1 });
  model.train();
  const { xs, ys } = trainingBatch(batch, seq);
  const x = mg.tensor(xs, { shape: [batch, seq], dtype: "i32" });
  const y = mg.tensor(ys, { shape: [batch, seq], dtype: "i32" });
  const stats = new mg.nn.StepStats();
  const loss = model.loss(x, y, { stats });
  loss.backward();
  loss.dispose();
  return { model, x, y, stats };
}

// ---- one optimizer step, gradients present ----
const optimizers: [string, (m: KimiLM) => { step(stats: mg.nn.StepStats): Promise<void> }][] = [
  ["AdamW", (m) => new AdamW(m, { lr: 1e-3, weightDecay: 0.1 })],
  [
    "Muon+AdamW",
    (m) =>
      new MuonWithAdamW(m, {
        muon: { lr: 0.02, weightDecay: 0.1 },
        adamw: { lr: 0.02, weightDecay: 0.1 },
      }),
  ],
  ["MuonClip", (m) => new MuonClip(m, { lr: 0.02, weightDecay: 0.1, tau: 100 })],
];
for (const [name, make] of optimizers) {
  await benchCase({
    group: `optimizer step ${name} tiny (${(total / 1e6).toFixed(2)}M params)`,
    work: { bytes: 28 * total },
    n: 3,
    minMs: 100,
    impls: [{
      lib: "moongrad",
      prepare: () => {
        const { model, stats } = modelWithGrads(1, 32);
        const opt = make(model);
        return Promise.resolve({
          async run() {
            await opt.step(stats);
            await mg.sync();
          },
        });
      },
    }],
  });
}

// ---- one training step: forward + backward + optimizer step ----
// The batch and group names are what bench/torch_bench.py uses for its rows (same batch of
// ids, same seed-1 initial weights; cli/bench_report.ts merges its rows into these groups).
const [stepBatch, stepSeq] = [4, 64];
const stepOptimizers: [string, (m: KimiLM) => { step(s: mg.nn.StepStats): Promise<void> }][] = [
  ["AdamW", (m) => new AdamW(m, { lr: 1e-3, weightDecay: 0.1 })],
  ["MuonClip", (m) => new MuonClip(m, { lr: 0.02, weightDecay: 0.1, tau: 100 })],
];
for (const [name, make] of stepOptimizers) {
  await benchCase({
    group: trainingStepGroup(name, stepBatch, stepSeq),
    work: { flops: 6 * active * stepBatch * stepSeq },
    // Steady state: the first steps compile the optimizer's and the accumulate variants'
    // pipelines and allocate its state (bench/torch_bench.py warms up the same 3 steps).
    warmup: 3,
    n: 5,
    minMs: 1000,
    impls: [{
      lib: "moongrad",
      prepare: () => {
        const { model, x, y, stats: s0 } = modelWithGrads(stepBatch, stepSeq);
        s0.dispose();
        const opt = make(model);
        model.zeroGrad();
        return Promise.resolve({
          async run() {
            const stats = new mg.nn.StepStats();
            const loss = model.loss(x, y, { stats });
            loss.backward();
            await opt.step(stats);
            stats.dispose();
            loss.dispose();
            model.zeroGrad();
            await mg.sync();
          },
        });
      },
    }],
  });
}
