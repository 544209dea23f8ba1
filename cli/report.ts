/**
 * The training report: one self-contained report.html (inline CSS and SVG, no scripts or
 * external assets; hover a line for its values, from SVG `<title>`s) built from a run's
 * run.json, metrics.jsonl and sample.txt: loss, per-layer and per-head max logits against τ,
 * γ of clipped heads, gradient and update norms, expert loads with dead or starved experts
 * flagged, learning rate, throughput, and the run's command line, seed, git commit and a
 * sample of generated text.
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

/** An expert whose share of the routed tokens stayed far below the uniform share. */
export interface StarvedExpert {
  /** Decoder layer index. */
  layer: number;
  /** Expert index within the layer. */
  expert: number;
  /** Its share of the routed tokens ÷ the uniform share 1/E, over the window (0 = dead). */
  share: number;
}

/**
 * Experts whose load over the last `window` steps with loads is below `threshold` × the
 * uniform share (default: 10 % over the last 20 steps); share 0 means dead (no token routed).
 * `firstDense` offsets MoE layer indices to decoder layer indices.
 */
export function starvedExperts(
  records: MetricRecord[],
  firstDense: number,
  window = 20,
  threshold = 0.1,
): StarvedExpert[] {
  const recent = records.filter((r) => r.expert_load?.length).slice(-window);
  const out: StarvedExpert[] = [];
  const layers = recent[0]?.expert_load?.length ?? 0;
  for (let m = 0; m < layers; m++) {
    const E = recent[0].expert_load![m].length;
    const sum = new Array(E).fill(0);
    for (const r of recent) r.expert_load![m]?.forEach((v, e) => (sum[e] += v));
    const total = sum.reduce((a, b) => a + b, 0);
    if (total === 0) continue;
    sum.forEach((v, e) => {
      const share = (v / total) * E;
      if (share < threshold) out.push({ layer: firstDense + m, expert: e, share });
    });
  }
  return out;
}

/** What the report shows besides run.json and metrics.jsonl. */
export interface ReportExtras {
  /** A sample of generated text (sample.txt of the run). */
  sample?: string;
  /** The git commit, when run.json has none (read at report time). */
  gitCommit?: string;
}

/** The report HTML of a run. */
export function buildReport(
  info: RunInfo,
  records: MetricRecord[],
  extras: ReportExtras = {},
): string {
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

  // Per-head max logits against τ (one chart per layer, one line per head).
  const withHeads = train.filter((r) => r.head_max_logit);
  const heads = info.config.num_attention_heads as number;
  for (let l = 0; l < layers && withHeads.length; l++) {
    charts.push(lineChart({
      title: `Max attention logit per head, layer ${l}${clipping ? " (clipped to τ)" : ""}`,
      xLabel: "step",
      size: [640, 220],
      series: Array.from({ length: heads }, (_, h) => ({
        name: `head ${h}`,
        color: COLORS[h % COLORS.length],
        width: 1.2,
        points: withHeads.map((r) =>
          [r.step, r.head_max_logit![l]?.[h] ?? NaN] as [number, number]
        ),
      })),
      refs: [{ y: s.tau, label: `τ = ${fmtNum(s.tau)}`, color: "#d62728" }],
    }));
  }
  const gammas = train.flatMap((r) => (r.clip_gamma ?? []).map((g) => ({ step: r.step, ...g })));
  if (clipping) {
    charts.push(lineChart({
      title: gammas.length
        ? `QK-Clip factor γ = τ / max logit of each clipped head (${gammas.length} head-steps)`
        : "QK-Clip factor γ of clipped heads: no head was clipped",
      xLabel: "step",
      yInclude: 1,
      size: [640, 200],
      series: Array.from({ length: layers }, (_, l) => ({
        name: `layer ${l}`,
        color: COLORS[l % COLORS.length],
        dots: true,
        noLine: true,
        points: gammas.filter((g) => g.layer === l).map((g) =>
          [g.step, g.gamma] as [number, number]
        ),
      })).filter((x) => x.points.length > 0),
      refs: [{ y: 1, label: "γ = 1 (untouched)", color: "#888" }],
    }));
  }
  const normRecs = train.filter((r) => r.grad_norm !== undefined || r.update_norm !== undefined);
  const gradClip = (s as { gradClip?: number | null }).gradClip ?? null;
  if (normRecs.length) {
    charts.push(lineChart({
      title: "Gradient norm (global L2, before clipping)" +
        (gradClip ? `, clipped to ${fmtNum(gradClip)}` : ""),
      xLabel: "step",
      yInclude: 0,
      size: [640, 220],
      series: [{
        name: "grad norm",
        color: COLORS[4],
        points: normRecs.map((r) => [r.step, r.grad_norm ?? NaN] as [number, number]),
      }],
      refs: gradClip ? [{ y: gradClip, label: `--grad-clip ${gradClip}`, color: "#888" }] : [],
    }));
    charts.push(lineChart({
      title: "Update norm (global L2 of the step's parameter change)",
      xLabel: "step",
      yInclude: 0,
      size: [640, 220],
      series: [{
        name: "update norm",
        color: COLORS[5],
        points: normRecs.map((r) => [r.step, r.update_norm ?? NaN] as [number, number]),
      }],
    }));
  }

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
  const starveWindow = Math.min(20, train.length);
  const starved = starvedExperts(train, firstDense, starveWindow);
  const expertsHtml = train.some((r) => r.expert_load?.length)
    ? starved.length
      ? `<table class="warn"><tr><th>layer</th><th>expert</th><th>share ÷ uniform</th></tr>${
        starved.map((x) =>
          `<tr><td>${x.layer}</td><td>${x.expert}</td><td>${
            x.share === 0 ? "0 (dead)" : x.share.toFixed(3)
          }</td></tr>`
        ).join("")
      }</table>`
      : `<p>No dead or starved expert: every expert received at least 10 % of the uniform share of routed tokens over the last ${starveWindow} steps.</p>`
    : `<p class="note">No expert loads recorded yet.</p>`;
  const rs = s as unknown as Record<string, unknown>;
  const extraSettings = [
    ["gradAccum", "micro-batches per step"],
    ["gradClip", "gradient clipping (global norm)"],
    ["qkClipAlpha", "QK-Clip α"],
    ["nsCoefficients", "Newton–Schulz coefficients"],
    ["nsMethod", "Newton–Schulz method"],
  ].filter(([k]) => rs[k] !== undefined && rs[k] !== null)
    .map(([k, label]) => row(label, String(rs[k])));
  const commit = info.gitCommit ?? extras.gitCommit;
  const runRecord = [
    row(
      "command",
      info.command ? `deno task train ${info.command.join(" ")}`.trim() : "(not recorded)",
    ),
    row("seed", String(s.seed)),
    row(
      "git commit",
      info.gitCommit
        ? info.gitCommit
        : commit
        ? `${commit} (read when the report was written; the run did not record one)`
        : "unknown (no git, or no permission to run it)",
    ),
    ...(info.initFrom ? [row("initialised from", info.initFrom)] : []),
  ].join("");
  const val = (v?: [number, number]) => (v ? `${v[1].toFixed(3)} (step ${v[0]})` : "–");
  const headline = [
    row("steps", `${sum.steps} of ${s.steps}`),
    row(
      "tokens",
      `${sum.tokens.toLocaleString("en-US")} (batch ${s.batch} × ${s.seqLen}${
        (s.gradAccum ?? 1) > 1 ? ` × ${s.gradAccum} micro-batches per step` : ""
      })`,
    ),
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
    ...extraSettings,
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
.warn td,.warn th{padding:2px 12px 2px 0;color:#a33}
pre.sample{white-space:pre-wrap;background:#f6f6f6;padding:10px;border-radius:4px;font-size:12.5px}
</style></head><body>
<h1>moongrad training report</h1>
<p class="note">A Kimi K2-style model (MLA + DeepSeekMoE) trained with ${esc(s.optimizer)}.
Regenerate with <code>deno task report ${esc("RUN_DIR")}</code>; raw numbers in metrics.jsonl.</p>
<table>${headline}</table>
<div class="grid">${charts.join("\n")}</div>
<h2 id="experts">Dead or starved experts</h2>${expertsHtml}
<h2 id="sample">Sample of generated text</h2>${
    extras.sample !== undefined
      ? `<pre class="sample">${esc(extras.sample)}</pre>`
      : `<p class="note">No sample yet (the trainer writes sample.txt at the end of a run).</p>`
  }
<h2 id="run">Run</h2><table>${runRecord}</table>
<h2>Settings</h2><table>${settings}</table>
</body></html>
`;
}

/**
 * `git rev-parse HEAD` in the current directory, or undefined when git is missing, this is
 * no checkout, or the process may not run it (no `--allow-run=git`; it never prompts).
 */
export async function gitCommit(): Promise<string | undefined> {
  try {
    // Never prompt: only run git when the permission is already granted.
    const perm = await Deno.permissions.query({ name: "run", command: "git" });
    if (perm.state !== "granted") return undefined;
    const out = await new Deno.Command("git", {
      args: ["rev-parse", "HEAD"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    return out.success && /^[0-9a-f]{40}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Regenerates `dir/report.html` from its run.json, metrics.jsonl and sample.txt (if any);
 * returns its path.
 */
export async function writeReport(dir: string): Promise<string> {
  const info = await readRunInfo(dir);
  const records = await readMetrics(`${dir}/metrics.jsonl`);
  const sample = await Deno.readTextFile(`${dir}/sample.txt`).catch(() => undefined);
  const path = `${dir}/report.html`;
  const extras: ReportExtras = { sample };
  if (!info.gitCommit) extras.gitCommit = await gitCommit();
  await writeTextAtomic(path, buildReport(info, records, extras));
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
