/**
 * `deno task repro:qkclip`: QK-Clip (Kimi K2 §2.1) at toy scale. The tiny preset, the same
 * seed and data, trained twice with a learning rate high enough that attention logits grow
 * fast: plain Muon (+AdamW) and MuonClip with a small τ. Writes the per-step max attention
 * logit (max over layers and heads) and the training loss of both runs to
 * bench/results/repro_qkclip.json and bench/results/repro_qkclip.svg (τ drawn).
 *
 *   deno task repro:qkclip [--steps N] [--lr X] [--tau X]
 */
import { lineChart } from "./svg.ts";
import { flag, frozenCorpus, resultsDir, stack, standalone, train } from "./repro_common.ts";

const steps = flag("steps", 32);
const lr = flag("lr", 0.2);
const tau = flag("tau", 30);
const common = [
  ...await frozenCorpus(),
  "--steps",
  String(steps),
  "--lr",
  String(lr),
  "--schedule",
  "constant",
  "--warmup",
  "4",
  "--seed",
  "1",
  "--eval-every",
  "100000",
  "--tau",
  String(tau),
];

const runs: Record<string, { maxLogit: number[]; loss: number[]; valLoss: number | null }> = {};
for (const opt of ["muon", "muonclip"]) {
  console.log(`== ${opt}: ${common.join(" ")}`);
  const m = await train(["--optimizer", opt, ...common], `runs/repro-qkclip-${opt}`);
  const stepsRec = m.filter((r) => r.loss !== undefined);
  const last = m.filter((r) => r.val_loss !== undefined).at(-1);
  runs[opt] = {
    maxLogit: stepsRec.map((r) => Math.max(...(r.max_logit ?? [NaN]))),
    loss: stepsRec.map((r) => r.loss!),
    valLoss: last && last.step > 0 ? last.val_loss! : null,
  };
}

const peak = (xs: number[]) => Math.max(...xs.filter(Number.isFinite));
const mean = (xs: number[]) => xs.reduce((a, v) => a + v, 0) / xs.length;
const tail = (xs: number[]) => xs.slice(-8);
const summary = {
  muonPeakMaxLogit: peak(runs.muon.maxLogit),
  muonclipPeakMaxLogit: peak(runs.muonclip.maxLogit),
  muonStepsOverTau: runs.muon.maxLogit.filter((v) => v > tau).length,
  muonclipStepsOverTau: runs.muonclip.maxLogit.filter((v) => v > tau).length,
  muonMeanLossLast8: mean(tail(runs.muon.loss)),
  muonclipMeanLossLast8: mean(tail(runs.muonclip.loss)),
  muonFinalValLoss: runs.muon.valLoss,
  muonclipFinalValLoss: runs.muonclip.valLoss,
};
console.log(summary);

const colors = { muon: "#c0504d", muonclip: "#3b6fb6" };
const series = (key: "maxLogit" | "loss") =>
  (["muon", "muonclip"] as const).map((o) => ({
    name: o === "muon" ? "Muon" : "MuonClip",
    color: colors[o],
    points: runs[o][key].map((v, i) => [i + 1, v] as [number, number]),
  }));
const logitChart = standalone(lineChart({
  title: `max attention logit per step (lr ${lr}, τ = ${tau})`,
  series: series("maxLogit"),
  refs: [{ y: tau, label: `τ = ${tau}`, color: "#888" }],
  xLabel: "step",
  yInclude: 0,
}));
const lossChart = standalone(lineChart({
  title: "training loss per step",
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
      command: `deno task repro:qkclip --steps ${steps} --lr ${lr} --tau ${tau}`,
      trainArgs: common,
      summary,
      runs,
    },
    null,
    1,
  ) + "\n",
);
console.log("wrote bench/results/repro_qkclip.json and bench/results/repro_qkclip.svg");
