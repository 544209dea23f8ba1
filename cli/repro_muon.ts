/**
 * `deno task repro:muon`: Muon vs AdamW (Moonlight) at toy scale. Each optimizer's learning
 * rate is picked from a 3-value grid (extended by ×3 steps, at most twice, while the best value
 * is at an edge) by the validation loss after a short run; the best of
 * each is then trained for the same number of tokens (same seed, data and schedule), with
 * validation loss measured along the way. Writes bench/results/repro_muon.json and
 * bench/results/repro_muon.svg (validation loss vs tokens) and prints the token ratio Muon
 * needs to reach AdamW's final validation loss.
 *
 *   deno task repro:muon [--grid-steps N] [--steps N]
 */
import { lineChart } from "./svg.ts";
import { flag, frozenCorpus, resultsDir, standalone, train } from "./repro_common.ts";

const gridSteps = flag("grid-steps", 8);
const steps = flag("steps", 28);
const GRID: Record<string, number[]> = {
  muon: [0.005, 0.02, 0.05],
  adamw: [0.001, 0.003, 0.01],
};
const base = [
  ...await frozenCorpus(),
  "--batch",
  "4",
  "--seq-len",
  "64",
  "--seed",
  "1",
  "--warmup",
  "2",
  "--eval-batches",
  "2",
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

const curves: Record<string, [number, number][]> = {};
for (const opt of ["muon", "adamw"]) {
  console.log(`== final ${opt} lr ${best[opt]}, ${steps} steps`);
  const m = await train(
    [
      ...base,
      "--optimizer",
      opt,
      "--lr",
      String(best[opt]),
      "--steps",
      String(steps),
      "--eval-every",
      "4",
    ],
    `runs/repro-muon-final-${opt}`,
  );
  const tokensAt = new Map(m.filter((r) => r.tokens !== undefined).map((r) => [r.step, r.tokens!]));
  curves[opt] = m.filter((r) => r.val_loss !== undefined).map((r) => [
    r.step === 0 ? 0 : tokensAt.get(r.step) ?? NaN,
    r.val_loss!,
  ]);
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
const adamwFinal = curves.adamw.at(-1)!;
const muonFinal = curves.muon.at(-1)!;
const reach = tokensToReach(curves.muon, adamwFinal[1]);
const summary = {
  bestLr: best,
  adamwFinalValLoss: adamwFinal[1],
  muonFinalValLoss: muonFinal[1],
  tokens: adamwFinal[0],
  muonTokensToReachAdamwFinal: reach,
  tokenRatio: reach === null ? null : reach / adamwFinal[0],
};
console.log(summary);

const svg = standalone(lineChart({
  title: `validation loss vs tokens (Muon lr ${best.muon}, AdamW lr ${best.adamw})`,
  series: [
    { name: "Muon", color: "#3b6fb6", points: curves.muon, dots: true },
    { name: "AdamW", color: "#c0504d", points: curves.adamw, dots: true },
  ],
  refs: [{ y: adamwFinal[1], label: "AdamW final", color: "#888" }],
  xLabel: "tokens",
}));
const dir = await resultsDir();
await Deno.writeTextFile(new URL("repro_muon.svg", dir), svg + "\n");
await Deno.writeTextFile(
  new URL("repro_muon.json", dir),
  JSON.stringify(
    {
      created: new Date().toISOString(),
      command: `deno task repro:muon --grid-steps ${gridSteps} --steps ${steps}`,
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
