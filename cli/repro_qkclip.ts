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
 *   deno task repro:qkclip --replot   (summary and SVG again from the stored runs in the JSON)
 */
import * as mg from "../mod.ts";
import { StepStats } from "../nn/step_stats.ts";
import { makeConfig } from "../nn/config.ts";
import { KimiLM, parameterCounts } from "../nn/model.ts";
import { linearWarmup, MuonClip, MuonWithAdamW } from "../optim/mod.ts";
import { BatchSampler, loadDefaultCorpus, splitCorpus } from "./data.ts";
import { bandSeries, lineChart } from "./svg.ts";
import { flag, resultsDir, stack, standalone } from "./repro_common.ts";

const REPLOT = Deno.args.includes("--replot");
const JSON_URL = new URL("../bench/results/repro_qkclip.json", import.meta.url);
// deno-lint-ignore no-explicit-any
const stored: any = REPLOT ? JSON.parse(await Deno.readTextFile(JSON_URL)) : null;
const setting = (name: string, key: string, fallback: number) =>
  stored ? stored.settings[key] as number : flag(name, fallback);
const steps = setting("steps", "steps", 300);
const lr = setting("lr", "lr", 0.04);
const tau = setting("tau", "tau", 10);
const seeds = setting("seeds", "seeds", 3);
const batch = setting("batch", "batch", 4);
const seqLen = setting("seq-len", "seqLen", 64);
const wd = setting("wd", "weightDecay", 0.1);
const warmup = setting("warmup", "warmup", 10);
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
const adapter: string = stored ? stored.adapter : (await mg.init()).description;
console.log(
  `adapter ${adapter}; model ${counts.total} parameters, lr ${lr}, τ ${tau}, ` +
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

const runs: Record<"muon" | "muonclip", Run[]> = stored ? stored.runs : { muon: [], muonclip: [] };
const t0 = performance.now();
for (let seed = 1; seed <= (REPLOT ? 0 : seeds); seed++) {
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
const totalSeconds: number = stored ? stored.summary.totalSeconds : (performance.now() - t0) / 1000;

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
    const after = first === null ? [] : r.maxLogit.slice(first); // the steps after it
    const sorted = [...after].sort((a, b) => a - b);
    const q = (p: number) => sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : null;
    return {
      seed: r.seed,
      peakMaxLogit: Math.max(...r.maxLogit),
      finalMaxLogit: r.maxLogit.at(-1)!,
      firstStepOverTau: first,
      stepsOverTau: r.maxLogit.filter((v) => v > tau).length,
      // After the first step over τ (MuonClip's first clip): the max logit's median, 90th
      // percentile and max, and the share of those steps still over τ.
      afterFirstOverTau: {
        median: q(0.5),
        p90: q(0.9),
        max: q(1),
        fractionOverTau: after.length ? after.filter((v) => v > tau).length / after.length : null,
      },
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
  title: `max attention logit per step (lr ${lr}, τ = ${tau}; mean, min–max over ${seeds} seeds)`,
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
      created: stored ? stored.created : new Date().toISOString(),
      ...(stored ? { replotted: new Date().toISOString() } : {}),
      adapter,
      command: stored ? stored.command : `deno task repro:qkclip ${Deno.args.join(" ")}`.trim(),
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
