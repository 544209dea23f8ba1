/**
 * `deno run -A bench/torch_export.ts DIR`: what bench/torch_bench.py needs to time the same
 * training step as bench/k2_bench.ts from the same starting point, written to DIR:
 * - model.safetensors + config.json: the tiny preset's initial weights (seed 1, HF names);
 * - k2_step.json: the batch (B 4 × T 64 input ids and next-token targets, bench/k2_common.ts),
 *   the training-step group names and FLOP count, the optimizers' hyper-parameters, moongrad's loss on the
 *   batch at the initial weights, and after one AdamW step / one MuonClip step (so the torch
 *   side can check its model and its optimizers against moongrad's).
 * Costs three forward passes, two backward passes and two optimizer steps.
 */
import * as mg from "../mod.ts";
import { saveSafetensors } from "../io/safetensors.ts";
import { makeConfig } from "../nn/config.ts";
import { KimiLM, parameterCounts } from "../nn/model.ts";
import { AdamW, MuonClip } from "../optim/mod.ts";
import { trainingBatch, trainingStepGroup } from "./k2_common.ts";

const dir = Deno.args[0];
if (!dir) {
  console.error("usage: deno run -A bench/torch_export.ts DIR");
  Deno.exit(2);
}
await mg.init();
const config = makeConfig("tiny");
const [batch, seq] = [4, 64];
const { xs, ys } = trainingBatch(batch, seq);
const x = mg.tensor(xs, { shape: [batch, seq], dtype: "i32" });
const y = mg.tensor(ys, { shape: [batch, seq], dtype: "i32" });
// The hyper-parameters bench/k2_bench.ts's training steps use.
const hyper = {
  AdamW: { lr: 1e-3, weightDecay: 0.1 },
  MuonClip: { lr: 0.02, weightDecay: 0.1, tau: 100 },
};

async function lossOf(model: KimiLM): Promise<number> {
  const l = mg.noGrad(() => model.loss(x, y));
  const [v] = await l.data();
  l.dispose();
  return v;
}

/** The loss after one step of `make`'s optimizer from the initial weights. */
async function afterOneStep(
  make: (m: KimiLM) => { step(s: mg.nn.StepStats): Promise<void> },
): Promise<number> {
  const model = new KimiLM(config, { seed: 1 });
  model.train();
  const opt = make(model);
  const stats = new mg.nn.StepStats();
  const loss = model.loss(x, y, { stats });
  loss.backward();
  loss.dispose();
  await opt.step(stats);
  stats.dispose();
  const v = await lossOf(model);
  model.dispose();
  return v;
}

const model = new KimiLM(config, { seed: 1 });
model.train();
await saveSafetensors(`${dir}/model.safetensors`, model, { config });
const loss0 = await lossOf(model);
model.dispose();
const lossAfter = {
  AdamW: await afterOneStep((m) => new AdamW(m, hyper.AdamW)),
  MuonClip: await afterOneStep((m) => new MuonClip(m, hyper.MuonClip)),
};
await Deno.writeTextFile(
  `${dir}/k2_step.json`,
  JSON.stringify({
    batch,
    seq,
    xs,
    ys,
    flops: 6 * parameterCounts(config).active * batch * seq,
    groups: {
      AdamW: trainingStepGroup("AdamW", batch, seq),
      Muon: trainingStepGroup("MuonClip", batch, seq),
    },
    hyper,
    loss0,
    lossAfter,
  }) + "\n",
);
console.log(
  `torch_export: tiny K2 seed 1, loss ${loss0.toFixed(6)}; after one AdamW step ${
    lossAfter.AdamW.toFixed(6)
  }, after one MuonClip step ${lossAfter.MuonClip.toFixed(6)}`,
);
