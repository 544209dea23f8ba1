/**
 * `deno task repro:qkclip`: QK-Clip (Kimi K2 §2.1, Figure 2) at toy scale, through the library
 * API (no trainer subprocess, so the model shape is free): a small K2-style model with wide
 * query/key heads, trained on the frozen byte corpus with plain Muon (+AdamW) and with
 * MuonClip at a learning rate from the trainer's normal range, for several seeds. Records the
 * per-step max attention logit (max over layers and heads of the step's forward, before its
 * update) and the training loss; writes bench/results/repro_qkclip.json and
 * bench/results/repro_qkclip.svg (mean lines with min–max bands over seeds, τ drawn).
 *
 * Why wide heads: the logit is q·k/√d with q, k of width d = qk_nope + qk_rope; Muon gives
 * every singular direction of W_q and W_k the same step, so the logit grows with the width of
 * the head, and wide heads reach a large logit at an ordinary learning rate within a few
 * hundred steps (the tiny preset's 24-wide heads needed lr 0.2).
 *
 *   deno task repro:qkclip [--steps N] [--lr X] [--tau X] [--seeds N] [--dim D]
 *     [--layers L] [--heads H] [--nope D] [--rope D] [--batch B] [--seq-len T] [--wd X]
 */
import * as mg from "../mod.ts";
import { StepStats } from "../nn/step_stats.ts";
import { makeConfig } from "../nn/config.ts";
import { KimiLM, parameterCounts } from "../nn/model.ts";
import { linearWarmup, MuonClip, MuonWithAdamW } from "../optim/mod.ts";
import { BatchSampler, loadDefaultCorpus, splitCorpus } from "./data.ts";
import { bandSeries, lineChart } from "./svg.ts";
import { flag, resultsDir, stack, standalone } from "./repro_common.ts";

const steps = flag("steps", 300);
const lr = flag("lr", 0.04);
const tau = flag("tau", 10);
const seeds = flag("seeds", 3);
const batch = flag("batch", 4);
const seqLen = flag("seq-len", 64);
const wd = flag("wd", 0.1);
const warmup = flag("warmup", 10);
const config = makeConfig({
  hidden_size: flag("dim", 64),
  intermediate_size: 2 * flag("dim", 64),
  moe_intermediate_size: flag("dim", 64),
  num_hidden_layers: flag("layers", 2),
  num_attention_heads: flag("heads", 2),
  num_key_value_heads: flag("heads", 2),
  n_routed_experts: flag("experts", 4),
  num_experts_per_tok: 2,
  kv_lora_rank: flag("kv-rank", 32),
  q_lora_rank: null,
  qk_nope_head_dim: flag("nope", 64),
  qk_rope_head_dim: flag("rope", 16),
  v_head_dim: 16,
});
const counts = parameterCounts(config);

const { bytes } = await loadDefaultCorpus();
const corpus = splitCorpus(bytes, seqLen, "default corpus");
const gpu = await mg.init();
console.log(
  `adapter ${gpu.description}; model ${counts.total} parameters, lr ${lr}, τ ${tau}, ` +
    `${steps} steps × ${batch}×${seqLen} tokens, ${seeds} seeds`,
);

interface Run {
  seed: number;
  maxLogit: number[];
  loss: number[];
  clippedHeads: number[];
  seconds: number;
}

async function run(kind: "muon" | "muonclip", seed: number): Promise<Run> {
  const model = new KimiLM(config, { seed });
  const sched = linearWarmup({ peak: lr, warmupSteps: warmup });
  const opt = kind === "muonclip"
    ? new MuonClip(model, { lr: sched, weightDecay: wd, tau })
    : new MuonWithAdamW(model, {
      muon: { lr: sched, weightDecay: wd },
      adamw: { lr: sched, weightDecay: wd },
    });
  const sampler = new BatchSampler(corpus.train, batch, seqLen, seed);
  const out: Run = { seed, maxLogit: [], loss: [], clippedHeads: [], seconds: 0 };
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const b = sampler.next();
    const x = mg.tensor(b.ids, { shape: [batch, seqLen], dtype: "i32" });
    const y = mg.tensor(b.targets, { shape: [batch, seqLen], dtype: "i32" });
    const stats = new StepStats();
    try {
      const loss = model.loss(x, y, { stats });
      x.dispose();
      y.dispose();
      loss.backward();
      if (opt instanceof MuonClip) await opt.step(stats);
      else await opt.step();
      model.updateRouterBias(stats, 0.01);
      const [l, read] = await Promise.all([loss.item(), stats.read(model)]);
      loss.dispose();
      const heads = read.maxLogits.flatMap((m) => Array.from(m));
      out.loss.push(l);
      out.maxLogit.push(Math.max(...heads));
      out.clippedHeads.push(kind === "muonclip" ? heads.filter((v) => v > tau).length : 0);
    } finally {
      stats.dispose();
    }
    opt.zeroGrad();
    if ((s + 1) % 25 === 0) {
      console.log(
        `  ${kind} seed ${seed} step ${s + 1}: loss ${out.loss.at(-1)!.toFixed(3)}, ` +
          `max logit ${out.maxLogit.at(-1)!.toFixed(2)}`,
      );
    }
  }
  out.seconds = (performance.now() - t0) / 1000;
  opt.dispose();
  model.dispose();
  return out;
}

const runs: Record<"muon" | "muonclip", Run[]> = { muon: [], muonclip: [] };
const t0 = performance.now();
for (let seed = 1; seed <= seeds; seed++) {
  for (const kind of ["muon", "muonclip"] as const) {
    if (Deno.args.includes("--muon-only") && kind === "muonclip") continue;
    const r = await run(kind, seed);
    runs[kind].push(r);
    console.log(
      `== ${kind} seed ${seed}: peak max logit ${Math.max(...r.maxLogit).toFixed(2)}, ` +
        `final loss ${r.loss.at(-1)!.toFixed(3)} (${r.seconds.toFixed(0)} s)`,
    );
  }
}
const totalSeconds = (performance.now() - t0) / 1000;

const mean = (xs: number[]) => xs.reduce((a, v) => a + v, 0) / xs.length;
const tailMean = (xs: number[]) => mean(xs.slice(-Math.max(1, Math.floor(steps / 10))));
/** First step (1-based) whose max logit exceeded τ, or null. */
const firstOver = (r: Run) => {
  const i = r.maxLogit.findIndex((v) => v > tau);
  return i < 0 ? null : i + 1;
};
const perSeed = (kind: "muon" | "muonclip") =>
  runs[kind].map((r) => {
    const first = firstOver(r);
    const after = first === null ? [] : r.maxLogit.slice(first + 2); // from 2 steps after the first clip
    return {
      seed: r.seed,
      peakMaxLogit: Math.max(...r.maxLogit),
      finalMaxLogit: r.maxLogit.at(-1)!,
      firstStepOverTau: first,
      stepsOverTau: r.maxLogit.filter((v) => v > tau).length,
      maxLogitAfterFirstClip: after.length ? Math.max(...after) : null,
      meanLossLast10pct: tailMean(r.loss),
      seconds: r.seconds,
    };
  });
const summary = {
  muon: perSeed("muon"),
  muonclip: perSeed("muonclip"),
  meanLossLast10pctDifference: mean(
    runs.muonclip.map((r, i) => tailMean(r.loss) - tailMean(runs.muon[i].loss)),
  ),
  totalSeconds,
};
console.log(JSON.stringify(summary, null, 1));

const colors = { muon: "#c0504d", muonclip: "#3b6fb6" };
const names = { muon: "Muon", muonclip: "MuonClip" };
const series = (key: "maxLogit" | "loss") =>
  (["muon", "muonclip"] as const).flatMap((k) =>
    bandSeries(names[k], colors[k], runs[k].map((r) => r[key]))
  );
const logitChart = standalone(lineChart({
  title: `max attention logit per step, ${seeds} seeds (lr ${lr}, τ = ${tau})`,
  series: series("maxLogit"),
  refs: [{ y: tau, label: `τ = ${tau}`, color: "#888" }],
  xLabel: "step",
  yInclude: 0,
}));
const lossChart = standalone(lineChart({
  title: "training loss per step (mean, min–max over seeds)",
  series: series("loss"),
  xLabel: "step",
}));
const dir = await resultsDir();
await Deno.writeTextFile(new URL("repro_qkclip.svg", dir), stack([logitChart, lossChart]));
await Deno.writeTextFile(
  new URL("repro_qkclip.json", dir),
  JSON.stringify(
    {
      created: new Date().toISOString(),
      adapter: gpu.description,
      command: `deno task repro:qkclip ${Deno.args.join(" ")}`.trim(),
      settings: { steps, lr, tau, seeds, batch, seqLen, weightDecay: wd, warmup },
      config: {
        hidden_size: config.hidden_size,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        qk_nope_head_dim: config.qk_nope_head_dim,
        qk_rope_head_dim: config.qk_rope_head_dim,
        kv_lora_rank: config.kv_lora_rank,
        n_routed_experts: config.n_routed_experts,
        parameters: counts.total,
      },
      summary,
      runs,
    },
    null,
    1,
  ) + "\n",
);
console.log("wrote bench/results/repro_qkclip.json and bench/results/repro_qkclip.svg");
