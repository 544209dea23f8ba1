/**
 * `deno task repro:muon`: Muon vs AdamW (Moonlight) at toy scale. Each optimizer's learning
 * rate is picked from a 3-value grid (extended by ×3 steps, at most twice, while the best value
 * is at an edge) by the validation loss after a short run; the best of
 * each is then trained for the same number of tokens (same seed, data and schedule), with
 * validation loss measured along the way. Writes bench/results/repro_muon.json and
 * bench/results/repro_muon.svg (validation loss vs tokens) and prints the token ratio Muon
 * needs to reach AdamW's final validation loss.
 *
 * With `--seeds N` (default 3) the final runs repeat for seeds 1..N (the grid uses seed 1);
 * the SVG shows the mean and the min–max band over seeds, and the summary gives the tokens
 * Muon needs to reach AdamW's final validation loss (mean, min, max over seeds).
 *
 *   deno task repro:muon [--grid-steps N] [--steps N] [--seeds N] [--eval-every N]
 *     [--batch B] [--seq-len T] [--dim D] [--layers L] [--heads H] [--experts E] [--config F]
 *   deno task repro:muon --replot   (redraw the SVG from the stored JSON)
 */
import { bandSeries, lineChart } from "./svg.ts";
import { flag, frozenCorpus, resultsDir, standalone, train } from "./repro_common.ts";

/** The chart: validation loss vs tokens, mean and min–max band over seeds per optimizer. */
function chart(
  curves: Record<string, [number, number][][]>,
  best: Record<string, number>,
  target: number,
): string {
  const xs = curves.adamw[0].map(([x]) => x);
  const ys = (opt: string) => curves[opt].map((c) => c.map(([, y]) => y));
  return standalone(lineChart({
    title: `validation loss vs tokens (Muon lr ${best.muon}, AdamW lr ${best.adamw}; ` +
      `mean, min–max over ${curves.muon.length} seeds)`,
    series: [
      ...bandSeries("Muon", "#3b6fb6", ys("muon"), xs),
      ...bandSeries("AdamW", "#c0504d", ys("adamw"), xs),
    ].map((s) => ({ ...s, dots: true })),
    refs: [{ y: target, label: "AdamW final (mean)", color: "#888" }],
    xLabel: "tokens",
  }));
}

if (Deno.args.includes("--replot")) {
  // Redraw the SVG from the stored curves (no training).
  const url = new URL("../bench/results/repro_muon.json", import.meta.url);
  const stored = JSON.parse(await Deno.readTextFile(url));
  const svg = chart(stored.curves, stored.summary.bestLr, stored.summary.target);
  await Deno.writeTextFile(new URL("repro_muon.svg", await resultsDir()), svg + "\n");
  console.log("wrote bench/results/repro_muon.svg from bench/results/repro_muon.json");
  Deno.exit(0);
}

const gridSteps = flag("grid-steps", 8);
const steps = flag("steps", 28);
const seeds = flag("seeds", 3);
const evalEvery = flag("eval-every", 4);
const tStart = performance.now();
/** Trainer flags of the model shape and batch that `repro:muon` passes through. */
const SHAPE_FLAGS = ["dim", "layers", "heads", "experts", "config"];
// Model-shape flags pass through to every trainer run (a bigger adapter can go bigger).
const passThrough: string[] = [];
for (const name of SHAPE_FLAGS) {
  const i = Deno.args.indexOf(`--${name}`);
  if (i >= 0) passThrough.push(`--${name}`, Deno.args[i + 1]);
}
/** `args` with its `--seed` replaced. */
const withSeed = (args: string[], seed: number) =>
  args.map((a, i) => (args[i - 1] === "--seed" ? String(seed) : a));
const GRID: Record<string, number[]> = {
  muon: [0.005, 0.02, 0.05],
  adamw: [0.001, 0.003, 0.01],
};
const base = [
  ...await frozenCorpus(),
  "--batch",
  String(flag("batch", 4)),
  "--seq-len",
  String(flag("seq-len", 64)),
  "--seed",
  "1",
  "--warmup",
  "2",
  "--eval-batches",
  "2",
  ...passThrough,
];

const grid: { optimizer: string; lr: number; valLoss: number }[] = [];
const best: Record<string, number> = {};
for (const [opt, initial] of Object.entries(GRID)) {
  const lrs = [...initial];
  for (let li = 0; li < lrs.length; li++) {
    const lr = lrs[li];
    console.log(`== grid ${opt} lr ${lr}, ${gridSteps} steps`);
    const m = await train(
      [
        ...base,
        "--optimizer",
        opt,
        "--lr",
        String(lr),
        "--steps",
        String(gridSteps),
        "--eval-every",
        "100000",
      ],
      `runs/repro-muon-grid-${opt}-${lr}`,
    );
    const v = m.filter((r) => r.val_loss !== undefined).at(-1)!.val_loss!;
    grid.push({ optimizer: opt, lr, valLoss: v });
    console.log(`   val loss ${v.toFixed(4)}`);
    // A grid whose best value is at an edge did not bracket the optimum: extend it (×3 or ÷3,
    // at most 2 extra values) so that the winner is an interior point.
    if (li === lrs.length - 1 && lrs.length < initial.length + 2) {
      const rows = grid.filter((g) => g.optimizer === opt);
      const bestLr = rows.reduce((a, b) => (b.valLoss < a.valLoss ? b : a)).lr;
      const sorted = [...lrs].sort((a, b) => a - b);
      if (bestLr === sorted.at(-1)) lrs.push(Number((bestLr * 3).toPrecision(3)));
      else if (bestLr === sorted[0]) lrs.push(Number((bestLr / 3).toPrecision(3)));
    }
  }
  const rows = grid.filter((g) => g.optimizer === opt && Number.isFinite(g.valLoss));
  best[opt] = rows.reduce((a, b) => (b.valLoss < a.valLoss ? b : a)).lr;
}

/** Per optimizer, per seed: validation loss curve as (tokens, loss) points. */
const curves: Record<string, [number, number][][]> = { muon: [], adamw: [] };
const seconds: Record<string, number[]> = { muon: [], adamw: [] };
for (let seed = 1; seed <= seeds; seed++) {
  for (const opt of ["muon", "adamw"]) {
    console.log(`== final ${opt} lr ${best[opt]}, seed ${seed}, ${steps} steps`);
    const t0 = performance.now();
    const m = await train(
      [
        ...withSeed(base, seed),
        "--optimizer",
        opt,
        "--lr",
        String(best[opt]),
        "--steps",
        String(steps),
        "--eval-every",
        String(evalEvery),
      ],
      `runs/repro-muon-final-${opt}-${seed}`,
    );
    seconds[opt].push((performance.now() - t0) / 1000);
    const tokensAt = new Map(
      m.filter((r) => r.tokens !== undefined).map((r) => [r.step, r.tokens!]),
    );
    curves[opt].push(
      m.filter((r) => r.val_loss !== undefined).map((r) => [
        r.step === 0 ? 0 : tokensAt.get(r.step) ?? NaN,
        r.val_loss!,
      ]),
    );
  }
}

/** Tokens at which a curve first reaches `target` (linear interpolation), or null. */
function tokensToReach(curve: [number, number][], target: number): number | null {
  for (let i = 0; i < curve.length; i++) {
    if (curve[i][1] <= target) {
      if (i === 0) return curve[0][0];
      const [x0, y0] = curve[i - 1], [x1, y1] = curve[i];
      return x0 + (x1 - x0) * (y0 - target) / (y0 - y1);
    }
  }
  return null;
}
const stat = (xs: (number | null)[]) => {
  const v = xs.filter((x): x is number => x !== null);
  return v.length === 0 ? null : {
    mean: v.reduce((a, b) => a + b, 0) / v.length,
    min: Math.min(...v),
    max: Math.max(...v),
    reached: `${v.length} of ${xs.length}`,
  };
};
const totalTokens = curves.adamw[0].at(-1)![0];
const adamwFinals = curves.adamw.map((c) => c.at(-1)![1]);
const muonFinals = curves.muon.map((c) => c.at(-1)![1]);
const target = adamwFinals.reduce((a, b) => a + b, 0) / adamwFinals.length;
// Per seed: the tokens Muon (and AdamW) need to reach the mean of AdamW's final losses, and
// the paired ratio (Muon's tokens to reach that seed's own AdamW final ÷ AdamW's tokens).
const muonReach = curves.muon.map((c) => tokensToReach(c, target));
const adamwReach = curves.adamw.map((c) => tokensToReach(c, target));
const pairedRatio = curves.muon.map((c, i) => {
  const r = tokensToReach(c, adamwFinals[i]);
  return r === null ? null : r / totalTokens;
});
const summary = {
  bestLr: best,
  seeds,
  tokensPerRun: totalTokens,
  adamwFinalValLoss: stat(adamwFinals),
  muonFinalValLoss: stat(muonFinals),
  target,
  muonTokensToReachTarget: stat(muonReach),
  adamwTokensToReachTarget: stat(adamwReach),
  pairedTokenRatio: stat(pairedRatio),
  secondsPerRun: { muon: stat(seconds.muon), adamw: stat(seconds.adamw) },
  totalSeconds: (performance.now() - tStart) / 1000,
};
console.log(JSON.stringify(summary, null, 1));

const svg = chart(curves, best, target);
const dir = await resultsDir();
await Deno.writeTextFile(new URL("repro_muon.svg", dir), svg + "\n");
await Deno.writeTextFile(
  new URL("repro_muon.json", dir),
  JSON.stringify(
    {
      created: new Date().toISOString(),
      command: `deno task repro:muon ${Deno.args.join(" ")}`.trim(),
      trainArgs: base,
      grid,
      summary,
      curves,
    },
    null,
    1,
  ) + "\n",
);
console.log("wrote bench/results/repro_muon.json and bench/results/repro_muon.svg");
