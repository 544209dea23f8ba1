/**
 * The training report: one self-contained report.html (inline CSS and SVG, no scripts or
 * external assets) built from a run's run.json and metrics.jsonl.
 *
 * `deno task report RUN_DIR` regenerates it (e.g. while a run is going, or after a resume).
 */
import { parseFlags } from "./args.ts";
import { writeTextAtomic } from "./checkpoint.ts";
import { CliError, runMain } from "./errors.ts";
import { type MetricRecord, readMetrics, readRunInfo, type RunInfo } from "./metrics.ts";
import { esc, fmtNum, heatmap, lineChart, type Series } from "./svg.ts";

const COLORS = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#9467bd",
  "#ff7f0e",
  "#17becf",
  "#8c564b",
  "#e377c2",
];

/** Exponential moving average of a series (debiased), for the smoothed loss curve. */
export function ema(points: [number, number][], alpha = 0.1): [number, number][] {
  let m = 0, w = 0;
  return points.map(([x, y]) => {
    m = (1 - alpha) * m + alpha * y;
    w = (1 - alpha) * w + alpha;
    return [x, m / w];
  });
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

/** Headline numbers of a run, shared by the report and the trainer's final summary. */
export interface RunSummary {
  /** Last completed step. */
  steps: number;
  /** Tokens trained on. */
  tokens: number;
  /** Training seconds. */
  seconds: number;
  /** Mean tokens per second. */
  tokensPerSecond: number;
  /** First validation loss (step, value). */
  firstVal?: [number, number];
  /** Last validation loss (step, value). */
  lastVal?: [number, number];
  /** Largest max logit over all steps and layers, with its step and layer. */
  maxLogit?: { value: number; step: number; layer: number };
  /** Steps in which at least one head was clipped. */
  clipSteps: number;
  /** Head-steps clipped in total. */
  clippedHeadSteps: number;
}

/** Computes the headline numbers from the metrics. */
export function summarize(records: MetricRecord[]): RunSummary {
  const train = records.filter((r) => r.loss !== undefined);
  const vals = records.filter((r) => r.val_loss !== undefined);
  const last = train.at(-1);
  let maxLogit: RunSummary["maxLogit"];
  let clipSteps = 0, clippedHeadSteps = 0;
  for (const r of train) {
    r.max_logit?.forEach((v, layer) => {
      if (!maxLogit || v > maxLogit.value) maxLogit = { value: v, step: r.step, layer };
    });
    const c = (r.clipped_heads ?? []).reduce((a, b) => a + b, 0);
    clippedHeadSteps += c;
    if (c > 0) clipSteps++;
  }
  const seconds = last?.time_s ?? 0;
  return {
    steps: last?.step ?? 0,
    tokens: last?.tokens ?? 0,
    seconds,
    tokensPerSecond: seconds > 0 ? (last?.tokens ?? 0) / seconds : 0,
    firstVal: vals[0] ? [vals[0].step, vals[0].val_loss!] : undefined,
    lastVal: vals.at(-1) ? [vals.at(-1)!.step, vals.at(-1)!.val_loss!] : undefined,
    maxLogit,
    clipSteps,
    clippedHeadSteps,
  };
}

/** Buckets per-step expert loads into at most `cols` columns of load share ÷ uniform share. */
function loadColumns(
  train: MetricRecord[],
  layer: number,
  cols: number,
): { values: number[][]; steps: number[] } {
  const withLoad = train.filter((r) => r.expert_load?.[layer]);
  const E = withLoad[0]?.expert_load?.[layer].length ?? 0;
  const n = Math.min(cols, withLoad.length);
  const values: number[][] = Array.from({ length: E }, () => new Array(n).fill(0));
  const steps: number[] = [];
  for (let c = 0; c < n; c++) {
    const lo = Math.floor((c * withLoad.length) / n),
      hi = Math.floor(((c + 1) * withLoad.length) / n);
    const sum = new Array(E).fill(0);
    for (let i = lo; i < hi; i++) withLoad[i].expert_load![layer].forEach((v, e) => (sum[e] += v));
    const total = sum.reduce((a, b) => a + b, 0) || 1;
    for (let e = 0; e < E; e++) values[e][c] = (sum[e] / total) * E;
    steps.push(withLoad[hi - 1].step);
  }
  return { values, steps };
}

/** The report HTML of a run. */
export function buildReport(info: RunInfo, records: MetricRecord[]): string {
  const s = info.settings;
  const train = records.filter((r) => r.loss !== undefined);
  const vals = records.filter((r) => r.val_loss !== undefined);
  const sum = summarize(records);
  const layers = info.config.num_hidden_layers as number;
  const firstDense = info.config.first_k_dense_replace as number;
  const lossPts = train.map((r) => [r.step, r.loss!] as [number, number]);
  const clipping = s.optimizer === "muonclip";
  const charts: string[] = [];

  charts.push(lineChart({
    title: "Loss (nats per byte)",
    xLabel: "step",
    yInclude: 0,
    series: [
      { name: "train", color: "#9ecae1", points: lossPts, width: 1 },
      { name: "train (EMA)", color: COLORS[0], points: ema(lossPts), width: 2.2 },
      {
        name: "validation",
        color: COLORS[1],
        points: vals.map((r) => [r.step, r.val_loss!]),
        dots: true,
        width: 2.2,
      },
    ],
    refs: [{ y: Math.log(256), label: "ln 256 (uniform)", color: "#888" }],
  }));

  const logitSeries: Series[] = Array.from({ length: layers }, (_, l) => ({
    name: `layer ${l}`,
    color: COLORS[l % COLORS.length],
    points: train.filter((r) => r.max_logit).map((r) =>
      [r.step, r.max_logit![l]] as [number, number]
    ),
  }));
  charts.push(lineChart({
    title: `Max attention logit per layer (max over heads)${clipping ? ", QK-Clip at τ" : ""}`,
    xLabel: "step",
    series: logitSeries,
    refs: [{ y: s.tau, label: `τ = ${fmtNum(s.tau)}`, color: "#d62728" }],
  }));

  charts.push(lineChart({
    title: (clipping
      ? "Heads clipped by QK-Clip per step"
      : `Heads over τ per step (not clipped: --optimizer ${s.optimizer})`) +
      (sum.clippedHeadSteps === 0 && train.length ? ": none, every max logit stayed under τ" : ""),
    xLabel: "step",
    yInclude: 0,
    series: Array.from({ length: layers }, (_, l) => ({
      name: `layer ${l}`,
      color: COLORS[l % COLORS.length],
      points: train.filter((r) =>
        r.clipped_heads
      ).map((r) => [r.step, r.clipped_heads![l]] as [number, number]),
    })),
  }));

  const moeLayers = layers - firstDense;
  const imbalance: Series[] = [];
  for (let m = 0; m < moeLayers; m++) {
    const { values, steps } = loadColumns(train, m, 60);
    if (values.length === 0) continue;
    charts.push(heatmap({
      title: `Expert load, layer ${
        firstDense + m
      } (MoE ${m}): share of routed tokens ÷ uniform share`,
      values,
      rowLabels: values.map((_, e) => `expert ${e}`),
      colLabel: (j) => `step ${steps[j]}`,
      center: 1,
      span: 1,
      legend: "white = balanced (1×), red = overloaded (2× or more), blue = starved (0×)",
    }));
    imbalance.push({
      name: `layer ${firstDense + m}`,
      color: COLORS[(firstDense + m) % COLORS.length],
      points: ema(
        train.filter((r) => r.expert_load?.[m]).map((r) => {
          const load = r.expert_load![m];
          const mean = load.reduce((a, b) => a + b, 0) / load.length;
          return [r.step, mean > 0 ? Math.max(...load) / mean : 1] as [number, number];
        }),
        0.2,
      ),
    });
  }
  if (imbalance.length) {
    charts.push(lineChart({
      title: "Expert load imbalance: busiest expert ÷ mean (EMA; 1 = perfectly balanced)",
      xLabel: "step",
      series: imbalance,
      refs: [{ y: 1, label: "balanced", color: "#888" }],
    }));
  }

  const lrSeries: Series[] = [];
  if (train.some((r) => r.lr?.muon !== undefined)) {
    lrSeries.push({
      name: "Muon",
      color: COLORS[0],
      points: train.map((r) => [r.step, r.lr?.muon ?? NaN] as [number, number]),
    });
  }
  lrSeries.push({
    name: "AdamW",
    color: COLORS[2],
    dashed: true,
    points: train.map((r) => [r.step, r.lr?.adamw ?? NaN] as [number, number]),
  });
  charts.push(
    lineChart({
      title: "Learning rate",
      xLabel: "step",
      yInclude: 0,
      series: lrSeries,
      size: [640, 200],
    }),
  );
  charts.push(lineChart({
    title: "Throughput (tokens per second)",
    xLabel: "step",
    yInclude: 0,
    size: [640, 200],
    series: [{
      name: "tokens/s",
      color: COLORS[3],
      points: ema(train.filter((r) => r.tokens_per_s).map((r) => [r.step, r.tokens_per_s!]), 0.2),
    }],
  }));

  const row = (k: string, v: string) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`;
  const val = (v?: [number, number]) => (v ? `${v[1].toFixed(3)} (step ${v[0]})` : "–");
  const headline = [
    row("steps", `${sum.steps} of ${s.steps}`),
    row("tokens", `${sum.tokens.toLocaleString("en-US")} (batch ${s.batch} × ${s.seqLen})`),
    row("training time", fmtTime(sum.seconds)),
    row("throughput", `${sum.tokensPerSecond.toFixed(0)} tokens/s`),
    row("validation loss", `${val(sum.firstVal)} → ${val(sum.lastVal)}; uniform = ln 256 = 5.545`),
    row(
      "max attention logit",
      sum.maxLogit
        ? `${
          sum.maxLogit.value.toFixed(2)
        } (layer ${sum.maxLogit.layer}, step ${sum.maxLogit.step}); τ = ${s.tau}`
        : "–",
    ),
    row(
      clipping ? "QK-Clip" : "heads over τ",
      `${sum.clippedHeadSteps} head-steps in ${sum.clipSteps} steps`,
    ),
  ].join("");
  const settings = [
    row(
      "model",
      `${s.preset}: ${info.params.total.toLocaleString("en-US")} parameters, ${
        info.params.active.toLocaleString("en-US")
      } active per token`,
    ),
    row(
      "shape",
      `${layers} layers (first ${firstDense} dense), hidden ${info.config.hidden_size}, ${info.config.num_attention_heads} MLA heads, ${info.config.n_routed_experts} routed experts top-${info.config.num_experts_per_tok} + ${info.config.n_shared_experts} shared`,
    ),
    row(
      "optimizer",
      `${s.optimizer}, lr ${s.lr} (AdamW ${s.adamwLr}), ${s.schedule} schedule, warm-up ${s.warmup}, weight decay ${s.weightDecay}, τ ${s.tau}, router bias step ${s.routerGamma}`,
    ),
    row(
      "data",
      `${info.corpus.source}: ${info.corpus.bytes.toLocaleString("en-US")} bytes (${
        info.corpus.trainBytes.toLocaleString("en-US")
      } train, ${info.corpus.valBytes.toLocaleString("en-US")} validation)${
        info.corpus.sha256 ? `, SHA-256 ${info.corpus.sha256.slice(0, 16)}…` : ""
      }, ${
        info.tokenizer && info.tokenizer.name !== "bytes"
          ? `${info.tokenizer.description} from ${info.tokenizer.name}`
          : "byte tokens"
      }`,
    ),
    row("seed", String(s.seed)),
    row("device", info.device),
    row("started", info.created),
  ].join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>moongrad training report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0}th{text-align:left;padding:3px 14px 3px 0;color:#555;font-weight:600;vertical-align:top}
td{padding:3px 0}.grid{display:grid;grid-template-columns:1fr;gap:18px}
svg{max-width:100%;height:auto;background:#fff}svg .t{font:600 13px system-ui,sans-serif}
svg .a{font:11px system-ui,sans-serif;fill:#444}svg .n{font:13px system-ui,sans-serif;fill:#888}
svg .g{stroke:#eee}svg .ax{stroke:#999}svg .f{fill:none;stroke:#bbb}
.note{color:#666;font-size:12.5px}
</style></head><body>
<h1>moongrad training report</h1>
<p class="note">A Kimi K2-style model (MLA + DeepSeekMoE) trained with ${esc(s.optimizer)}.
Regenerate with <code>deno task report ${esc("RUN_DIR")}</code>; raw numbers in metrics.jsonl.</p>
<table>${headline}</table>
<div class="grid">${charts.join("\n")}</div>
<h2>Settings</h2><table>${settings}</table>
</body></html>
`;
}

/** Regenerates `dir/report.html` from its run.json and metrics.jsonl; returns its path. */
export async function writeReport(dir: string): Promise<string> {
  const info = await readRunInfo(dir);
  const records = await readMetrics(`${dir}/metrics.jsonl`);
  const path = `${dir}/report.html`;
  await writeTextAtomic(path, buildReport(info, records));
  return path;
}

if (import.meta.main) {
  await runMain("report", async () => {
    const { flags, positionals } = parseFlags(Deno.args, {
      help: { type: "boolean", short: "h", help: "show this help" },
    }, 1);
    if (flags.help) {
      console.log(
        "Usage: deno task report RUN_DIR\n\nRegenerates RUN_DIR/report.html from RUN_DIR/run.json " +
          "and RUN_DIR/metrics.jsonl.",
      );
      return;
    }
    const dir = positionals[0];
    if (!dir) throw new CliError("missing RUN_DIR (usage: deno task report RUN_DIR)");
    const path = await writeReport(dir.replace(/\/+$/, ""));
    console.log(`report: ${path}`);
  });
}
