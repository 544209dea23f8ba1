/// <reference lib="dom" />
/**
 * Hand-drawn canvas charts for the live page: line charts (with a dashed threshold line),
 * stacked bars and heatmaps, sharp on high-DPI screens and coloured from the page's CSS
 * variables (so they follow light/dark mode). No dependencies.
 */

/** One line of a line chart. */
export interface Series {
  /** Legend text. */
  label: string;
  /** CSS colour. */
  color: string;
  /** [x, y] points in order of x. */
  points: [number, number][];
  /** Line width in CSS pixels (default 1.75). */
  width?: number;
  /** Draw dots at the points (sparse series such as validation loss). */
  dots?: boolean;
}

/** A horizontal reference line (e.g. τ). */
export interface Threshold {
  /** Its y value. */
  y: number;
  /** Label drawn at its right end. */
  label: string;
  /** CSS colour. */
  color: string;
}

/** What a line chart draws. */
export interface LineChart {
  /** The lines. */
  series: Series[];
  /** x range end (default: the last x). */
  xMax?: number;
  /** A dashed reference line; drawn only when within (or near) the data's range. */
  threshold?: Threshold;
  /** y axis from zero rather than from the data's minimum. */
  fromZero?: boolean;
}

/** Stacked bars: one bar per x, one segment per group. */
export interface BarChart {
  /** [x, values per group]. */
  bars: [number, number[]][];
  /** Colour of each group. */
  colors: string[];
  /** x range end. */
  xMax?: number;
  /** Shown when every bar is zero. */
  emptyText?: string;
}

/** A heatmap: rows × columns of values in [0, max]. */
export interface Heatmap {
  /** Row-major values. */
  rows: number[][];
  /** Label per row (left). */
  rowLabels: string[];
  /** Value of the hottest colour (default: the largest value). */
  max?: number;
  /** A value drawn as a marked contour (e.g. τ): cells above it get an outline. */
  mark?: number;
  /** Caption under the x axis. */
  xCaption?: string;
}

const PAD = { left: 44, right: 12, top: 10, bottom: 22 };

function css(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Sizes the canvas backing store to its CSS box × devicePixelRatio; returns the context. */
function prepare(canvas: HTMLCanvasElement): { g: CanvasRenderingContext2D; w: number; h: number } {
  const dpr = globalThis.devicePixelRatio || 1;
  const w = Math.max(50, canvas.clientWidth);
  const h = Math.max(40, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d")!;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = `11px ${css("--font-ui")}`;
  g.textBaseline = "middle";
  return { g, w, h };
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1000) return `${(v / 1000).toFixed(a >= 1e4 ? 0 : 1)}k`;
  if (a >= 10 || v === 0) return v.toFixed(0);
  return a >= 1 ? v.toFixed(1).replace(/\.0$/, "") : v.toFixed(2);
}

/** Axes, grid and x ticks; returns the value → pixel maps. */
function axes(
  g: CanvasRenderingContext2D,
  w: number,
  h: number,
  x: [number, number],
  y: [number, number],
) {
  const px = (v: number) =>
    PAD.left + ((v - x[0]) / (x[1] - x[0] || 1)) * (w - PAD.left - PAD.right);
  const py = (v: number) =>
    h - PAD.bottom - ((v - y[0]) / (y[1] - y[0] || 1)) * (h - PAD.top - PAD.bottom);
  g.strokeStyle = css("--grid");
  g.fillStyle = css("--muted");
  g.lineWidth = 1;
  g.textAlign = "right";
  for (const t of niceTicks(y[0], y[1], Math.max(2, Math.floor(h / 40)))) {
    g.beginPath();
    g.moveTo(PAD.left, Math.round(py(t)) + 0.5);
    g.lineTo(w - PAD.right, Math.round(py(t)) + 0.5);
    g.stroke();
    g.fillText(fmt(t), PAD.left - 6, py(t));
  }
  g.textAlign = "center";
  for (const t of niceTicks(x[0], x[1], Math.max(2, Math.floor(w / 70)))) {
    if (Number.isInteger(t)) g.fillText(String(t), px(t), h - PAD.bottom / 2 + 2);
  }
  return { px, py };
}

function empty(g: CanvasRenderingContext2D, w: number, h: number, text = "waiting for data") {
  g.fillStyle = css("--muted");
  g.textAlign = "center";
  g.fillText(text, w / 2, h / 2);
}

/** Draws a line chart. */
export function drawLineChart(canvas: HTMLCanvasElement, c: LineChart): void {
  const { g, w, h } = prepare(canvas);
  const pts = c.series.flatMap((s) => s.points);
  if (!pts.length) return empty(g, w, h);
  const xMax = Math.max(c.xMax ?? 0, ...pts.map((p) => p[0]), 1);
  const xMin = Math.min(...pts.map((p) => p[0]));
  let lo = Math.min(...pts.map((p) => p[1]));
  let hi = Math.max(...pts.map((p) => p[1]));
  const t = c.threshold;
  // Show τ when it is within 3× the data's top; otherwise name it in the corner.
  const showT = t !== undefined && t.y <= Math.max(hi * 3, hi + 1);
  if (showT) hi = Math.max(hi, t!.y * 1.05);
  if (c.fromZero) lo = Math.min(0, lo);
  const padY = (hi - lo) * 0.06 || Math.abs(hi) * 0.1 || 1;
  const { px, py } = axes(g, w, h, [xMin, xMax], [c.fromZero ? lo : lo - padY, hi + padY]);
  if (t && showT) {
    g.save();
    g.setLineDash([5, 4]);
    g.strokeStyle = t.color;
    g.lineWidth = 1.25;
    g.beginPath();
    g.moveTo(PAD.left, py(t.y));
    g.lineTo(w - PAD.right, py(t.y));
    g.stroke();
    g.restore();
  }
  if (t) {
    g.fillStyle = t.color;
    g.textAlign = "right";
    g.fillText(showT ? t.label : `${t.label} (above)`, w - PAD.right - 2, showT ? py(t.y) - 8 : 10);
  }
  g.lineJoin = "round";
  for (const s of c.series) {
    g.strokeStyle = g.fillStyle = s.color;
    g.lineWidth = s.width ?? 1.75;
    g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(px(x), py(y)) : g.moveTo(px(x), py(y))));
    g.stroke();
    if (s.dots || s.points.length === 1) {
      for (const [x, y] of s.points) {
        g.beginPath();
        g.arc(px(x), py(y), 2.75, 0, 2 * Math.PI);
        g.fill();
      }
    }
  }
}

/** Draws stacked bars (e.g. heads clipped per step, one colour per layer). */
export function drawBars(canvas: HTMLCanvasElement, c: BarChart): void {
  const { g, w, h } = prepare(canvas);
  if (!c.bars.length) return empty(g, w, h);
  const xMax = Math.max(c.xMax ?? 0, ...c.bars.map((b) => b[0]));
  const top = Math.max(1, ...c.bars.map((b) => b[1].reduce((a, v) => a + v, 0)));
  const { px, py } = axes(g, w, h, [0.5, xMax + 0.5], [0, top]);
  if (c.bars.every((b) => b[1].every((v) => !v))) {
    g.fillStyle = css("--muted");
    g.textAlign = "center";
    g.fillText(c.emptyText ?? "none yet", w / 2, h / 2 - 8);
  }
  const bw = Math.max(1, (px(1) - px(0)) * 0.8);
  for (const [x, vals] of c.bars) {
    let acc = 0;
    vals.forEach((v, i) => {
      if (!v) return;
      g.fillStyle = c.colors[i % c.colors.length];
      g.fillRect(px(x) - bw / 2, py(acc + v), bw, py(acc) - py(acc + v));
      acc += v;
    });
  }
}

/** A perceptual colour ramp (viridis-like) for t in [0, 1]. */
export function ramp(t: number): string {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const u = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(u));
  const f = u - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Draws a heatmap, rows top to bottom, columns left to right. */
export function drawHeatmap(canvas: HTMLCanvasElement, c: Heatmap): void {
  const { g, w, h } = prepare(canvas);
  const cols = Math.max(0, ...c.rows.map((r) => r.length));
  if (!cols) return empty(g, w, h);
  const max = c.max ?? Math.max(1e-9, ...c.rows.flat());
  const left = 34, bottom = c.xCaption ? 16 : 2;
  const cw = (w - left - 2) / cols;
  const ch = (h - bottom - 2) / c.rows.length;
  c.rows.forEach((row, r) => {
    g.fillStyle = css("--muted");
    g.textAlign = "right";
    g.fillText(c.rowLabels[r] ?? "", left - 5, 1 + ch * (r + 0.5));
    row.forEach((v, k) => {
      g.fillStyle = ramp(v / max);
      g.fillRect(left + k * cw, 1 + r * ch, Math.ceil(cw), Math.ceil(ch));
      if (c.mark !== undefined && v > c.mark) {
        g.strokeStyle = css("--bad");
        g.lineWidth = 2;
        g.strokeRect(left + k * cw + 1, 2 + r * ch, cw - 2, ch - 2);
      }
    });
  });
  if (c.xCaption) {
    g.fillStyle = css("--muted");
    g.textAlign = "center";
    g.fillText(c.xCaption, left + (w - left) / 2, h - bottom / 2);
  }
}
