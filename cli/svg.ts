/**
 * Minimal SVG charts for the training report: line charts (with optional reference lines)
 * and heatmaps, as strings with no external assets.
 */

/** One line of a chart. */
export interface Series {
  /** Legend label. */
  name: string;
  /** Stroke colour. */
  color: string;
  /** (x, y) points; non-finite y values are skipped. */
  points: [number, number][];
  /** Dashed stroke. */
  dashed?: boolean;
  /** Draw dots at the points (for sparse series such as validation loss). */
  dots?: boolean;
  /** Draw no line through the points (a scatter; use with `dots`). */
  noLine?: boolean;
  /** Stroke width (default 1.6). */
  width?: number;
  /** A shaded band behind the line: (x, low, high) triples, e.g. the min–max over seeds. */
  band?: [number, number, number][];
  /** Hover values: invisible markers with a `<title>` at (up to ~200 of) the points (default true). */
  hover?: boolean;
}

/** A horizontal reference line (e.g. τ). */
export interface RefLine {
  /** Its y value. */
  y: number;
  /** Label drawn at its right end. */
  label: string;
  /** Colour. */
  color: string;
}

/** Options of `lineChart`. */
export interface LineChartOptions {
  /** Chart title. */
  title: string;
  /** The lines. */
  series: Series[];
  /** Reference lines. */
  refs?: RefLine[];
  /** x-axis label. */
  xLabel?: string;
  /** y-axis label. */
  yLabel?: string;
  /** Force the y range to include this value (e.g. 0). */
  yInclude?: number;
  /** Width and height in px (default 640 × 280). */
  size?: [number, number];
}

/** Escapes text for HTML/SVG. */
export function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/**
 * One series summarising several runs of the same length: the mean per index as the line and
 * the min–max over runs as its band, at x = `xs[i]` (default index + 1, e.g. the step).
 * Non-finite values are skipped per index.
 */
export function bandSeries(
  name: string,
  color: string,
  runs: number[][],
  xs?: number[],
): Series[] {
  const n = Math.max(0, ...runs.map((r) => r.length));
  const points: [number, number][] = [];
  const band: [number, number, number][] = [];
  for (let i = 0; i < n; i++) {
    const v = runs.map((r) => r[i]).filter(Number.isFinite);
    if (v.length === 0) continue;
    const x = xs ? xs[i] : i + 1;
    points.push([x, v.reduce((a, b) => a + b, 0) / v.length]);
    band.push([x, Math.min(...v), Math.max(...v)]);
  }
  return [{ name, color, points, band }];
}

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** A compact number label. */
export function fmtNum(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/** A line chart as an SVG string. */
export function lineChart(o: LineChartOptions): string {
  const [W, H] = o.size ?? [640, 280];
  const m = { l: 56, r: 110, t: 28, b: 40 };
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  const pts = o.series.flatMap((s) =>
    [
      ...s.points,
      ...(s.band ?? []).flatMap(([x, lo, hi]) => [[x, lo], [x, hi]] as [number, number][]),
    ].filter(([, y]) => Number.isFinite(y))
  );
  // A reference line far above the data (e.g. τ = 100 while logits are ~5) would flatten the
  // curves: it is noted at the top instead of stretching the axis.
  const dataMax = Math.max(...pts.map(([, y]) => y));
  const offScale = (r: RefLine) => pts.length > 0 && dataMax > 0 && r.y > 3 * dataMax;
  const ys = [
    ...pts.map(([, y]) => y),
    ...(o.refs ?? []).filter((r) => !offScale(r)).map((r) => r.y),
  ];
  if (o.yInclude !== undefined) ys.push(o.yInclude);
  const xs = pts.map(([x]) => x);
  const head = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" ` +
    `height="${H}" role="img" aria-label="${esc(o.title)}">` +
    `<text x="${m.l}" y="18" class="t">${esc(o.title)}</text>`;
  if (pts.length === 0) {
    return `${head}<text x="${W / 2}" y="${
      H / 2
    }" text-anchor="middle" class="n">no data yet</text></svg>`;
  }
  const x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x1 === x0) x1 = x0 + 1;
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const flat = y1 === y0;
  if (flat) [y0, y1] = o.yInclude === y0 ? [y0, y0 + 1] : [y0 - 1, y1 + 1];
  const pad = (y1 - y0) * 0.06;
  if (!(flat && o.yInclude === y0)) y0 -= pad;
  y1 += pad;
  if (o.yInclude !== undefined && o.yInclude >= Math.min(...ys) - 1e-12) {
    y0 = Math.min(y0, o.yInclude);
  }
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + (1 - (y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [head];
  for (const t of ticks(y0, y1)) {
    const y = sy(t).toFixed(1);
    parts.push(
      `<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" class="g"/>` +
        `<text x="${m.l - 6}" y="${y}" dy="4" text-anchor="end" class="a">${fmtNum(t)}</text>`,
    );
  }
  for (const t of ticks(x0, x1, 6)) {
    const x = sx(t).toFixed(1);
    parts.push(
      `<line x1="${x}" x2="${x}" y1="${m.t + ph}" y2="${m.t + ph + 4}" class="ax"/>` +
        `<text x="${x}" y="${m.t + ph + 16}" text-anchor="middle" class="a">${fmtNum(t)}</text>`,
    );
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" class="f"/>`);
  for (const r of o.refs ?? []) {
    if (offScale(r)) {
      parts.push(
        `<text x="${m.l + pw - 4}" y="${m.t + 12}" text-anchor="end" fill="${r.color}" class="a">` +
          `${esc(r.label)}: above the chart (max here ${fmtNum(dataMax)})</text>`,
      );
      continue;
    }
    const y = sy(r.y).toFixed(1);
    parts.push(
      `<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="${r.color}" ` +
        `stroke-dasharray="6 4" stroke-width="1.5"/>` +
        `<text x="${m.l + 6}" y="${y}" dy="-4" fill="${r.color}" class="a">${esc(r.label)}</text>`,
    );
  }
  for (const s of o.series) {
    const b = (s.band ?? []).filter(([, lo, hi]) => Number.isFinite(lo) && Number.isFinite(hi));
    if (b.length < 2) continue;
    const upper = b.map(([x, , hi]) => `${sx(x).toFixed(1)},${sy(hi).toFixed(1)}`);
    const lower = b.map(([x, lo]) => `${sx(x).toFixed(1)},${sy(lo).toFixed(1)}`).reverse();
    parts.push(
      `<polygon points="${[...upper, ...lower].join(" ")}" fill="${s.color}" ` +
        `fill-opacity="0.18" stroke="none"/>`,
    );
  }
  o.series.forEach((s, i) => {
    const p = s.points.filter(([, y]) => Number.isFinite(y));
    if (p.length === 0) return;
    const d = p.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(
      "",
    );
    if (!s.noLine) {
      parts.push(
        `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.6}"` +
          `${s.dashed ? ' stroke-dasharray="5 3"' : ""} stroke-linejoin="round"/>`,
      );
    }
    if (s.dots) {
      for (const [x, y] of p) {
        parts.push(
          `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`,
        );
      }
    }
    if (s.hover !== false) {
      // Hover values: a transparent marker per point (every k-th of long series) whose
      // <title> the browser shows as a tooltip.
      const k = Math.max(1, Math.ceil(p.length / 200));
      const lo = new Map((s.band ?? []).map(([x, l, h]) => [x, [l, h]]));
      for (let j = 0; j < p.length; j += k) {
        const [x, y] = p[j];
        const range = lo.get(x);
        parts.push(
          `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="4" fill="${s.color}" ` +
            `fill-opacity="0" class="h"><title>${esc(s.name)}: ${fmtNum(x)}, ${fmtNum(y)}${
              range ? ` (${fmtNum(range[0])}–${fmtNum(range[1])})` : ""
            }</title></circle>`,
        );
      }
    }
    const ly = m.t + 6 + i * 16;
    parts.push(
      `<line x1="${m.l + pw + 8}" x2="${
        m.l + pw + 24
      }" y1="${ly}" y2="${ly}" stroke="${s.color}" ` +
        `stroke-width="2.5"${s.dashed ? ' stroke-dasharray="4 2"' : ""}/>` +
        `<text x="${m.l + pw + 28}" y="${ly}" dy="4" class="a">${esc(s.name)}</text>`,
    );
  });
  if (o.xLabel) {
    parts.push(
      `<text x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle" class="a">${
        esc(o.xLabel)
      }</text>`,
    );
  }
  if (o.yLabel) {
    parts.push(
      `<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" class="a">${
        esc(o.yLabel)
      }</text>`,
    );
  }
  parts.push("</svg>");
  return parts.join("");
}

/** Options of `heatmap`. */
export interface HeatmapOptions {
  /** Title. */
  title: string;
  /** Values [row][column]. */
  values: number[][];
  /** Row labels. */
  rowLabels: string[];
  /** Label of column j (shown for a few columns). */
  colLabel: (j: number) => string;
  /** Value shown white; values above run to red, below to blue. */
  center: number;
  /** Value at full colour (distance from center). */
  span: number;
  /** Legend text. */
  legend: string;
  /** Width in px (default 640). */
  width?: number;
}

/** A diverging heatmap (blue below `center`, white at it, red above) as an SVG string. */
export function heatmap(o: HeatmapOptions): string {
  const W = o.width ?? 640;
  const rows = o.values.length, cols = o.values[0]?.length ?? 0;
  const m = { l: 56, r: 20, t: 28, b: 34 };
  const cell = Math.max(8, Math.min(18, 180 / Math.max(1, rows)));
  const H = m.t + rows * cell + m.b;
  const pw = W - m.l - m.r;
  const cw = pw / Math.max(1, cols);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" ` +
    `role="img" aria-label="${esc(o.title)}"><text x="${m.l}" y="18" class="t">${
      esc(o.title)
    }</text>`,
  ];
  const color = (v: number) => {
    const t = Math.max(-1, Math.min(1, (v - o.center) / o.span));
    const k = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${k},${k})` : `rgb(${k},${k},255)`;
  };
  for (let r = 0; r < rows; r++) {
    const y = m.t + r * cell;
    parts.push(
      `<text x="${m.l - 6}" y="${y + cell / 2}" dy="4" text-anchor="end" class="a">${
        esc(o.rowLabels[r])
      }</text>`,
    );
    for (let c = 0; c < cols; c++) {
      parts.push(
        `<rect x="${(m.l + c * cw).toFixed(1)}" y="${y}" width="${(cw + 0.5).toFixed(1)}" ` +
          `height="${cell}" fill="${color(o.values[r][c])}"><title>${esc(o.rowLabels[r])}, ${
            esc(o.colLabel(c))
          }: ${fmtNum(o.values[r][c])}</title></rect>`,
      );
    }
  }
  const every = Math.max(1, Math.ceil(cols / 6));
  for (let c = 0; c < cols; c += every) {
    parts.push(
      `<text x="${(m.l + (c + 0.5) * cw).toFixed(1)}" y="${m.t + rows * cell + 14}" ` +
        `text-anchor="middle" class="a">${esc(o.colLabel(c))}</text>`,
    );
  }
  parts.push(
    `<text x="${m.l}" y="${H - 4}" class="a">${esc(o.legend)}</text></svg>`,
  );
  return parts.join("");
}
