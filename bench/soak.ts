/**
 * Soak run: N training steps of the tiny Kimi K2-style model (MuonClip, batch × seq random
 * byte tokens, a new batch every step so MoE group sizes change), reading back what the trainer
 * reads back each step (loss, max logits, expert loads). Every `--every` steps it forces two
 * garbage collections and records the process RSS, the JS heap, `mg.memory()` and the runtime
 * counters (bind groups created, submits, dispatches), so native memory that only grows shows
 * up as a slope, and the step time of the interval.
 *
 *   deno task soak [--steps 2000] [--every 10] [--batch 2] [--seq 32] [--out bench/results/soak.json]
 *                  [--no-report]
 *   deno task soak --from-json bench/results/soak.json   # re-render the RESULTS.md section
 *
 * It writes the series to `--out` (JSON) and, unless `--no-report`, replaces the section between
 * `<!-- soak start -->` and `<!-- soak end -->` in bench/RESULTS.md with the command, adapter,
 * date and a summary (RSS at a few steps, KB per step after warm-up, bind groups and submits
 * per step, step time). Needs `--v8-flags=--expose-gc` (the task passes it): RSS without a forced
 * GC mixes native growth with garbage the GC has not yet collected. "RSS − V8 heap" subtracts
 * V8's heapTotal, which grows its young generation in 16 MB steps now and then.
 *
 * Measured (2026-12-02, lavapipe, 2 shared cores): 2,000 steps take ~25–35 min; RSS 363.4 MB at
 * step 200 and 364.2 MB at step 2,000 (0.4 KB/step), 367 bind groups in all (none after step
 * 10), 7 submits per step. Before (commit bd4de6b): +1.8–2 MB per step, 638 bind groups and 14
 * submits per step.
 */
import * as mg from "../mod.ts";
import { KimiLM } from "../nn/model.ts";
import { MuonClip } from "../optim/mod.ts";
import { runtimeStats } from "../core/runtime.ts";
import process from "node:process";

interface Flags {
  steps: number;
  every: number;
  batch: number;
  seq: number;
  out: string;
  report: boolean;
  /** Re-render the RESULTS.md section from this JSON file instead of running. */
  fromJson?: string;
}

function parseFlags(args: string[]): Flags {
  const f: Flags = {
    steps: 2000,
    every: 10,
    batch: 2,
    seq: 32,
    out: "bench/results/soak.json",
    report: true,
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [name, inline] = a.startsWith("--") && a.includes("=") ? a.split("=", 2) : [a, undefined];
    const value = () => inline ?? args[++i];
    const int = (v: string | undefined) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) {
        throw new Error(`soak: ${name} takes a positive integer, got ${v}`);
      }
      return n;
    };
    if (name === "--steps") f.steps = int(value());
    else if (name === "--every") f.every = int(value());
    else if (name === "--batch") f.batch = int(value());
    else if (name === "--seq") f.seq = int(value());
    else if (name === "--out") f.out = value() ?? f.out;
    else if (name === "--no-report") f.report = false;
    else if (name === "--from-json") f.fromJson = value();
    else {throw new Error(
        `soak: unknown flag ${a} (--steps, --every, --batch, --seq, --out, --no-report, --from-json)`,
      );}
  }
  return f;
}

/** One reading of the series. */
export interface SoakSample {
  /** Steps done when it was taken. */
  step: number;
  /** Process resident set after two forced GCs, MB. */
  rssMB: number;
  /** V8 heap in use, MB. */
  heapMB: number;
  /** RSS − V8's heapTotal (native memory: WebGPU, the driver, malloc), MB. */
  nativeMB: number;
  /** `mg.memory().allocatedBytes`, MB. */
  gpuAllocatedMB: number;
  /** Runtime counters since the start of the run. */
  bindGroupsCreated: number;
  submits: number;
  dispatches: number;
  /** Mean wall time per step since the previous sample, ms. */
  stepMs: number;
  /** Mean CPU time (user + system, all threads: the CPU adapter's too) per step, ms. */
  cpuMs: number;
  /** Alias copies since the start (one sub-buffer passed to two bindings). */
  aliasCopies: number;
}

/** CPU time of this process (user + system, all threads) in ms (getrusage, via node:process). */
function cpuTimeMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const gc = (globalThis as { gc?: () => void }).gc;

async function settle(): Promise<void> {
  await mg.sync();
  gc?.();
  await new Promise((r) => setTimeout(r, 20));
  gc?.();
}

/** A cheap deterministic generator of byte tokens (a new batch every step). */
function tokenSource(seed: number): (n: number) => number[] {
  let s = seed >>> 0;
  return (n) =>
    Array.from({ length: n }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s >>> 24;
    });
}

/** Runs the soak and returns the series; `onSample` sees each reading as it is taken. */
export async function soak(
  f: Pick<Flags, "steps" | "every" | "batch" | "seq">,
  onSample: (s: SoakSample) => void = () => {},
): Promise<SoakSample[]> {
  await mg.init();
  const model = new KimiLM("tiny", { seed: 0 });
  model.train();
  const opt = new MuonClip(model, { lr: 2e-2, tau: 100 });
  const next = tokenSource(7);
  const series: SoakSample[] = [];
  const start = runtimeStats();
  let t0 = performance.now();
  let c0 = cpuTimeMs();
  let last = 0;
  const sample = async (step: number) => {
    const ms = (performance.now() - t0) / Math.max(1, step - last);
    const cpu = (cpuTimeMs() - c0) / Math.max(1, step - last);
    await settle();
    const r = runtimeStats();
    const m = Deno.memoryUsage();
    const s: SoakSample = {
      step,
      rssMB: +(m.rss / 2 ** 20).toFixed(1),
      heapMB: +(m.heapUsed / 2 ** 20).toFixed(1),
      nativeMB: +((m.rss - m.heapTotal) / 2 ** 20).toFixed(1),
      gpuAllocatedMB: +(mg.memory().allocatedBytes / 2 ** 20).toFixed(2),
      bindGroupsCreated: r.bindGroupsCreated - start.bindGroupsCreated,
      submits: r.submits - start.submits,
      dispatches: r.dispatches - start.dispatches,
      stepMs: +ms.toFixed(1),
      cpuMs: +cpu.toFixed(1),
      aliasCopies: r.aliasCopies - start.aliasCopies,
    };
    series.push(s);
    onSample(s);
    last = step;
    t0 = performance.now();
    c0 = cpuTimeMs();
  };
  await sample(0);
  for (let step = 1; step <= f.steps; step++) {
    const ids = next(f.batch * (f.seq + 1));
    const xs: number[][] = [], ys: number[][] = [];
    for (let b = 0; b < f.batch; b++) {
      const row = ids.slice(b * (f.seq + 1), (b + 1) * (f.seq + 1));
      xs.push(row.slice(0, f.seq));
      ys.push(row.slice(1));
    }
    const stats = new mg.nn.StepStats();
    const loss = model.loss(xs, ys, { stats });
    loss.backward();
    await opt.step(stats);
    model.updateRouterBias(stats, 1e-3);
    const [value] = await Promise.all([loss.item(), stats.read(model)]);
    stats.dispose();
    loss.dispose();
    opt.zeroGrad();
    if (!Number.isFinite(value)) throw new Error(`soak: loss ${value} at step ${step}`);
    if (step % f.every === 0 || step === f.steps) await sample(step);
  }
  opt.dispose();
  return series;
}

/** Least-squares slope of y over x. */
function slope(pts: [number, number][]): number {
  const n = pts.length;
  if (n < 2) return NaN;
  const mx = pts.reduce((a, p) => a + p[0], 0) / n, my = pts.reduce((a, p) => a + p[1], 0) / n;
  let num = 0, den = 0;
  for (const [x, y] of pts) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return num / den;
}

/** What the RESULTS.md section says about a series. */
export function summarize(series: SoakSample[], warmup: number) {
  const after = series.filter((s) => s.step >= warmup);
  const first = after[0], lastS = series[series.length - 1];
  const steps = lastS.step - first.step;
  const per = (k: "bindGroupsCreated" | "submits" | "dispatches") =>
    steps > 0 ? (lastS[k] - first[k]) / steps : NaN;
  const median = (k: "stepMs" | "cpuMs") => {
    const v = after.slice(1).map((s) => s[k]).sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length / 2)] : NaN;
  };
  return {
    warmup,
    rssKBPerStep: slope(after.map((s) => [s.step, s.rssMB * 1024])),
    nativeKBPerStep: slope(after.map((s) => [s.step, s.nativeMB * 1024])),
    bindGroupsPerStep: per("bindGroupsCreated"),
    submitsPerStep: per("submits"),
    dispatchesPerStep: per("dispatches"),
    medianStepMs: median("stepMs"),
    medianCpuMs: median("cpuMs"),
  };
}

if (import.meta.main) {
  const f = parseFlags(Deno.args);
  if (f.fromJson) {
    await writeReport(JSON.parse(await Deno.readTextFile(f.fromJson)));
    Deno.exit(0);
  }
  if (!gc) {
    console.warn("soak: run with --v8-flags=--expose-gc (deno task soak does) for RSS after GC");
  }
  const info = await mg.init();
  console.log(
    `soak: ${f.steps} steps of tiny K2 + MuonClip, batch ${f.batch}×${f.seq}, on ${info.description}`,
  );
  const series = await soak(f, (s) => {
    if (s.step % (f.every * 10) === 0 || s.step === f.steps || s.step <= f.every) {
      console.log(
        `step ${s.step}: RSS ${s.rssMB} MB (native ${s.nativeMB}), heap ${s.heapMB} MB, ` +
          `GPU ${s.gpuAllocatedMB} MB, ` +
          `bind groups ${s.bindGroupsCreated}, submits ${s.submits}, ${s.stepMs} ms/step`,
      );
    }
  });
  const warmup = Math.min(50, Math.floor(f.steps / 2));
  const sum = summarize(series, warmup);
  console.log(
    `after step ${warmup}: RSS ${sum.rssKBPerStep.toFixed(1)} KB/step ` +
      `(native ${sum.nativeKBPerStep.toFixed(1)}), ` +
      `${sum.bindGroupsPerStep.toFixed(2)} bind groups/step, ${sum.submitsPerStep.toFixed(2)} ` +
      `submits/step, ${
        sum.dispatchesPerStep.toFixed(0)
      } dispatches/step, median ${sum.medianStepMs} ms/step (CPU ${sum.medianCpuMs} ms/step)`,
  );
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const doc = {
    command: `deno task soak ${Deno.args.join(" ")}`.trim(),
    adapter: info.description,
    deno: Deno.version.deno,
    date,
    flags: f,
    summary: sum,
    series,
  };
  await Deno.writeTextFile(f.out, JSON.stringify(doc, null, 1) + "\n");
  console.log(`wrote ${f.out}`);
  if (f.report) await writeReport(doc);
}

/** What bench/soak.ts writes to its JSON file (and renders into RESULTS.md). */
export interface SoakDoc {
  command: string;
  adapter: string;
  deno: string;
  date: string;
  flags: Flags;
  summary: ReturnType<typeof summarize>;
  series: SoakSample[];
}

/** Greedy word wrap at `width` columns (what `deno fmt` does to markdown prose). */
function wrap(text: string, width = 100): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join("\n");
}

/** A markdown table with padded columns (as `deno fmt` writes it). */
function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, 3, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(w[i])).join(" | ")} |`;
  return [line(head), line(w.map((n) => "-".repeat(n))), ...rows.map(line)].join("\n");
}

/** The RESULTS.md section for a soak run. */
export function reportSection(doc: SoakDoc): string {
  const s = doc.summary;
  const at = (n: number) => doc.series.find((x) => x.step === n);
  const marks = [0, 10, 50, 100, 200, 500, 1000, 1500, 2000, doc.flags.steps]
    .filter((n, i, a) => a.indexOf(n) === i && at(n));
  const rows = marks.map((n) => {
    const x = at(n)!;
    return [n, x.rssMB, x.nativeMB, x.heapMB, x.gpuAllocatedMB, x.bindGroupsCreated, x.submits]
      .map(String);
  });
  const cpu = Number.isFinite(s.medianCpuMs)
    ? `, ${s.medianCpuMs} ms/step CPU (user + system, all threads)`
    : "";
  return [
    "<!-- soak start -->",
    "",
    `## Soak: host memory over ${doc.flags.steps} training steps`,
    "",
    wrap(
      `Command: \`${doc.command}\` (series in \`${doc.flags.out}\`). Adapter: ${doc.adapter}. ` +
        `Deno ${doc.deno}. Date: ${doc.date}. Tiny K2 preset, MuonClip, batch ${doc.flags.batch} × ` +
        `${doc.flags.seq} random byte tokens per step, loss + max logits + expert loads read back ` +
        `each step; memory read after two forced GCs every ${doc.flags.every} steps.`,
    ),
    "",
    table(
      [
        "step",
        "RSS MB",
        "RSS − V8 heap MB",
        "JS heap used MB",
        "GPU allocated MB",
        "bind groups created",
        "submits",
      ],
      rows,
    ),
    "",
    wrap(
      `After step ${s.warmup}: RSS slope ${s.rssKBPerStep.toFixed(1)} KB/step, RSS − V8 heap ` +
        `${s.nativeKBPerStep.toFixed(1)} KB/step (least squares), ` +
        `${s.bindGroupsPerStep.toFixed(2)} bind groups/step, ${s.submitsPerStep.toFixed(2)} ` +
        `submits/step, ${s.dispatchesPerStep.toFixed(0)} dispatches/step, median ` +
        `${s.medianStepMs} ms/step wall${cpu}.`,
    ),
    "",
    "<!-- soak end -->",
  ].join("\n");
}

/** Replaces (or appends) the soak section of bench/RESULTS.md. */
async function writeReport(doc: SoakDoc): Promise<void> {
  const path = "bench/RESULTS.md";
  const section = reportSection(doc);
  const text = await Deno.readTextFile(path);
  const re = /<!-- soak start -->[\s\S]*?<!-- soak end -->/;
  await Deno.writeTextFile(
    path,
    re.test(text) ? text.replace(re, section) : `${text.trimEnd()}\n\n${section}\n`,
  );
  console.log(`updated ${path}`);
}
