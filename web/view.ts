/// <reference lib="dom" />
/**
 * Draws a run's history into the page: the stat tiles, the loss / max-logit / clipped-heads /
 * throughput charts, the per-head heatmap and one expert-load heatmap per MoE layer.
 */
import { drawBars, drawHeatmap, drawLineChart } from "./charts.ts";
import type { StepRecord, TrainSettings } from "./trainer.ts";

/** Everything the page has seen of one run. */
export interface History {
  /** The run's settings. */
  settings: TrainSettings;
  /** One record per completed step. */
  records: StepRecord[];
  /** [step, validation loss], step 0 = before training. */
  val: [number, number][];
  /** Layer index of each MoE layer. */
  moeLayerIds: number[];
  /** Wall-clock seconds of training so far (evaluations included). */
  seconds: number;
}

/** Colours of layers 0, 1, 2, … (distinct in light and dark mode). */
export const LAYER_COLORS = ["#3b82f6", "#f59e0b", "#10b981", "#e5484d", "#a855f7", "#14b8a6"];

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function legend(id: string, items: [string, string][]): void {
  const el = $(id);
  const html = items.map(([c, t]) =>
    c === "ramp"
      ? `<span><i class="ramp"></i>${t}</span>`
      : `<span><i style="background:${c}"></i>${t}</span>`
  ).join("");
  if (el.innerHTML !== html) el.innerHTML = html;
}

function text(id: string, value: string): void {
  const el = $(id);
  if (el.textContent !== value) el.textContent = value;
}

function clock(s: number): string {
  if (!Number.isFinite(s)) return "–";
  const m = Math.floor(s / 60);
  return m ? `${m}m ${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(0)}s`;
}

function ema(values: number[], alpha = 0.25): number[] {
  let e = NaN;
  return values.map((v) => (e = Number.isNaN(e) ? v : e + alpha * (v - e)));
}

/** Redraws every chart and tile from `h` (null: clears to "waiting"). */
export function render(h: History | null): void {
  const recs = h?.records ?? [];
  const s = h?.settings;
  const last = recs.at(-1);
  const steps = s?.steps ?? 0;
  const clip = s?.optimizer === "muonclip";
  const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim();
  const bad = getComputedStyle(document.documentElement).getPropertyValue("--bad").trim();

  // Tiles.
  const tps = ema(recs.map((r) => r.tokensPerSecond));
  text("s-step", last ? `${last.step} / ${steps}` : "–");
  text("s-loss", last ? last.loss.toFixed(3) : "–");
  text("s-val", h?.val.length ? h.val.at(-1)![1].toFixed(3) : "–");
  text("s-tps", tps.length ? tps.at(-1)!.toFixed(0) : "–");
  text("s-logit", last ? Math.max(...last.maxLogits.flat()).toFixed(2) : "–");
  text("s-clip-label", clip ? "heads clipped" : "heads over τ");
  const totalOver = recs.reduce((a, r) => a + r.overTau.reduce((x, y) => x + y, 0), 0);
  text("s-clip", last ? `${last.overTau.reduce((a, b) => a + b, 0)} (Σ ${totalOver})` : "–");
  text("s-time", h && recs.length ? clock(h.seconds) : "–");
  text("s-eta", h && recs.length ? clock((h.seconds / recs.length) * (steps - recs.length)) : "–");

  // Loss.
  drawLineChart($("c-loss"), {
    xMax: steps,
    series: [
      { label: "train", color: accent, points: recs.map((r) => [r.step, r.loss]), width: 1.25 },
      { label: "val", color: "#f59e0b", points: h?.val ?? [], dots: true, width: 2 },
    ],
  });
  legend("l-loss", [[accent, "train (this step's batch)"], ["#f59e0b", "validation"]]);

  // Max logit per layer against τ.
  const layers = last?.maxLogits.length ?? 0;
  const tau = s?.tau ?? 0;
  drawLineChart($("c-logit"), {
    xMax: steps,
    threshold: s ? { y: tau, label: `τ = ${tau}`, color: bad } : undefined,
    series: Array.from({ length: layers }, (_, l) => ({
      label: `layer ${l}`,
      color: LAYER_COLORS[l % LAYER_COLORS.length],
      points: recs.map((r) => [r.step, Math.max(...r.maxLogits[l])] as [number, number]),
    })),
  });
  const layerLegend = Array.from(
    { length: layers },
    (_, l) => [LAYER_COLORS[l % LAYER_COLORS.length], `layer ${l}`] as [string, string],
  );
  legend("l-logit", [...layerLegend, [bad, clip ? "τ (clipped above)" : "τ (not enforced)"]]);

  // Per-head heatmap of the last step.
  const heads = last?.maxLogits ?? [];
  // Scale to τ once the logits come within a factor 3 of it, else to the data.
  const dataTop = Math.max(...heads.flat(), 1e-6);
  const top = tau <= 3 * dataTop ? Math.max(tau, dataTop) : dataTop;
  drawHeatmap($("c-heads"), {
    rows: heads,
    rowLabels: heads.map((_, l) => `L${l}`),
    max: top,
    mark: tau,
    xCaption: heads.length ? `heads 0–${heads[0].length - 1}` : undefined,
  });
  legend("l-heads", [["ramp", `0 → ${top.toFixed(1)}`]]);

  // Heads over τ per step.
  text("h-clip", clip ? "Heads clipped per step" : "Heads over τ per step (not clipped)");
  drawBars($("c-clip"), {
    xMax: steps,
    bars: recs.map((r) => [r.step, r.overTau]),
    colors: LAYER_COLORS,
    emptyText: `no head over τ = ${tau} yet`,
  });
  legend("l-clip", layerLegend);

  // Expert load, one heatmap per MoE layer (rows experts, columns steps).
  const moe = $("moe");
  const ids = h?.moeLayerIds ?? [];
  if (moe.childElementCount !== ids.length) {
    moe.innerHTML = ids.map((_, i) =>
      `<figure><figcaption id="moe-cap-${i}"></figcaption><canvas id="moe-${i}"></canvas></figure>`
    ).join("");
  }
  ids.forEach((layer, i) => {
    const experts = last?.load[i].length ?? 0;
    const rows = Array.from({ length: experts }, (_, e) => recs.map((r) => r.load[i][e]));
    const imbalance = last ? Math.max(...last.load[i]) * experts : NaN;
    text(
      `moe-cap-${i}`,
      `layer ${layer} · busiest expert ${
        Number.isFinite(imbalance) ? imbalance.toFixed(2) : "–"
      }× the mean`,
    );
    drawHeatmap($(`moe-${i}`), {
      rows,
      rowLabels: rows.map((_, e) => `E${e}`),
      max: experts ? 3 / experts : 1,
      xCaption: recs.length ? `steps 1–${recs.length}` : undefined,
    });
  });
  legend("l-moe", [["ramp", "0 → 3× an even share"]]);

  // Throughput.
  drawLineChart($("c-tps"), {
    xMax: steps,
    fromZero: true,
    series: [
      {
        label: "tokens/s",
        color: "#94a3b8",
        points: recs.map((r) => [r.step, r.tokensPerSecond]),
        width: 1,
      },
      { label: "EMA", color: accent, points: recs.map((r, i) => [r.step, tps[i]]) },
    ],
  });
}
