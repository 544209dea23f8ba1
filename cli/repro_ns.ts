/**
 * `deno task repro:ns`: where Newton–Schulz puts the singular values. For Gaussian random
 * matrices of several shapes (incl. a batched one) it runs `mg.optim.newtonSchulz` on the GPU
 * with (a) the default quintic for 5 steps and (b) a per-step schedule (the quintic for 4
 * steps, then one cubic 1.5σ − 0.5σ³ step), computes the output's singular values with a
 * float64 one-sided Jacobi SVD, and writes bench/results/repro_ns.json and a histogram
 * bench/results/repro_ns.svg (one row per schedule).
 */
import * as mg from "../mod.ts";
import {
  CUBIC_COEFFICIENTS,
  newtonSchulz,
  type NsCoefficients,
  QUINTIC_COEFFICIENTS,
} from "../optim/newton_schulz.ts";
import { gaussian, mat, singularValues } from "../tests/reference/linalg.ts";
import { esc, fmtNum } from "./svg.ts";

/** A named per-step coefficient schedule. */
interface Schedule {
  name: string;
  steps: NsCoefficients[];
}

const SCHEDULES: Schedule[] = [
  { name: "quintic ×5 (default)", steps: Array(5).fill(QUINTIC_COEFFICIENTS) },
  {
    name: "quintic ×4 + cubic ×1",
    steps: [...Array(4).fill(QUINTIC_COEFFICIENTS), CUBIC_COEFFICIENTS],
  },
];

const SHAPES: number[][] = [[64, 64], [64, 256], [256, 64], [8, 32, 96]];

const info = await mg.init();
const results: {
  schedule: string;
  coefficients: NsCoefficients[];
  shapes: { shape: number[]; min: number; max: number; mean: number; count: number }[];
  min: number;
  max: number;
  values: number[];
}[] = [];

for (const sch of SCHEDULES) {
  const all: number[] = [];
  const perShape = [];
  for (const [si, shape] of SHAPES.entries()) {
    const [b, m, n] = shape.length === 3 ? shape : [1, ...shape];
    const data = new Float32Array(b * m * n);
    for (let k = 0; k < b; k++) {
      data.set(Float32Array.from(gaussian(m, n, 1000 + 17 * si + k).a), k * m * n);
    }
    const g = mg.tensor(data, { shape });
    const out = newtonSchulz(g, { coefficients: sch.steps });
    const got = (await out.data()) as Float32Array;
    g.dispose();
    out.dispose();
    const sv: number[] = [];
    for (let k = 0; k < b; k++) {
      const s = singularValues(mat(got.subarray(k * m * n, (k + 1) * m * n), m, n));
      sv.push(...s);
    }
    all.push(...sv);
    perShape.push({
      shape,
      min: Math.min(...sv),
      max: Math.max(...sv),
      mean: sv.reduce((a, v) => a + v, 0) / sv.length,
      count: sv.length,
    });
    console.log(
      `${sch.name.padEnd(24)} ${shape.join("x").padEnd(9)} σ in [${Math.min(...sv).toFixed(3)}, ${
        Math.max(...sv).toFixed(3)
      }]`,
    );
  }
  results.push({
    schedule: sch.name,
    coefficients: sch.steps,
    shapes: perShape,
    min: Math.min(...all),
    max: Math.max(...all),
    values: all.map((v) => Number(v.toFixed(5))),
  });
}

/** A histogram panel per schedule, shared bins over [0, 1.4]. */
function histogramSvg(): string {
  const bins = 56, lo = 0, hi = 1.4;
  const w = 640, ph = 150, pad = { l: 50, r: 16, t: 26, b: 30 };
  const hgt = results.length * (ph + pad.t + pad.b);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${hgt}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  ];
  results.forEach((r, ri) => {
    const y0 = ri * (ph + pad.t + pad.b) + pad.t;
    const counts = new Array(bins).fill(0);
    for (const v of r.values) {
      counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / (hi - lo) * bins)))]++;
    }
    const cmax = Math.max(...counts);
    const pw = w - pad.l - pad.r;
    const x = (v: number) => pad.l + (v - lo) / (hi - lo) * pw;
    parts.push(
      `<text x="${pad.l}" y="${y0 - 8}" font-size="12" font-weight="bold">${
        esc(r.schedule)
      }: σ in [${r.min.toFixed(3)}, ${r.max.toFixed(3)}] (${r.values.length} values)</text>`,
    );
    counts.forEach((c, i) => {
      const bh = c / cmax * ph;
      parts.push(
        `<rect x="${x(lo + i * (hi - lo) / bins).toFixed(1)}" y="${
          (y0 + ph - bh).toFixed(1)
        }" width="${(pw / bins - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="${
          ri === 0 ? "#3b6fb6" : "#c0504d"
        }"/>`,
      );
    });
    parts.push(
      `<line x1="${pad.l}" y1="${y0 + ph}" x2="${w - pad.r}" y2="${y0 + ph}" stroke="#333"/>`,
      `<line x1="${x(1)}" y1="${y0}" x2="${x(1)}" y2="${
        y0 + ph
      }" stroke="#888" stroke-dasharray="4 3"/>`,
      `<text x="${pad.l - 6}" y="${y0 + 10}" text-anchor="end">${cmax}</text>`,
      `<text x="${pad.l - 6}" y="${y0 + ph}" text-anchor="end">0</text>`,
    );
    for (let t = 0; t <= 1.4 + 1e-9; t += 0.2) {
      parts.push(
        `<text x="${x(t).toFixed(1)}" y="${y0 + ph + 14}" text-anchor="middle">${fmtNum(t)}</text>`,
      );
    }
    parts.push(
      `<text x="${w / 2}" y="${
        y0 + ph + 27
      }" text-anchor="middle">singular value of the output</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

const dir = new URL("../bench/results/", import.meta.url);
await Deno.mkdir(dir, { recursive: true });
await Deno.writeTextFile(
  new URL("repro_ns.json", dir),
  JSON.stringify(
    {
      created: new Date().toISOString(),
      adapter: info.description,
      command: "deno task repro:ns",
      shapes: SHAPES,
      input: "Gaussian N(0,1) entries (tests/reference/linalg.ts gaussian), f32 on the GPU",
      results,
    },
    null,
    1,
  ) + "\n",
);
await Deno.writeTextFile(new URL("repro_ns.svg", dir), histogramSvg() + "\n");
console.log("wrote bench/results/repro_ns.json and bench/results/repro_ns.svg");
