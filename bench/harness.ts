/**
 * The bench harness: one measurement per library and case, printed as one table per group
 * and recorded as JSON lines, both from the same numbers. Bench files are plain `deno run`
 * scripts (bench/run.ts runs them one process each; `deno task bench`); there is no second
 * timing loop (an earlier version printed its own loop and then registered a `Deno.bench`,
 * and the two disagreed by up to 30 % on the same case).
 *
 * One case = one group holding moongrad (the baseline) and each peer at the same size. For
 * every library the harness: builds the operands, runs one warm-up iteration (which compiles
 * pipelines), checks that iteration's output against moongrad's (max |peer − moongrad| /
 * max |moongrad|), then times at least `n` iterations and at least `minMs` milliseconds.
 * Every iteration ends by waiting for the GPU (see peers.ts for how each library does it),
 * so the times are execution times, not recording times. The table gives the mean time per
 * iteration (and min–max over the iterations), the throughput of the declared work
 * (GFLOP/s, GB/s or MB/s), this library's time / moongrad's time, and the check.
 *
 * When MG_BENCH_META names a file (cli/bench_report.ts sets it), each measured row (a
 * `BenchResult`) is appended to it as one JSON line: the very object the table was printed
 * from, so bench/RESULTS.md and the console carry the same numbers.
 */

/** The work of one iteration: floating-point operations and/or minimal bytes moved. */
export interface Work {
  /** Floating-point operations per iteration (GFLOP/s is printed when given). */
  flops?: number;
  /** Minimal bytes read + written per iteration (GB/s is printed when given). */
  bytes?: number;
  /** Megabytes of input per iteration, for CPU work such as tokenizing (MB/s). */
  mb?: number;
}

/** What one library prepares for a case. */
export interface Prepared {
  /**
   * Records one iteration and waits until the GPU has executed it. A peer that times itself
   * (numpy in a subprocess) returns its own time of the iteration in ms, which the harness
   * records instead of the round trip.
   */
  run: () => Promise<void | number>;
  /** The output of one iteration, read back, for the cross-library check (optional). */
  result?: () => Promise<ArrayLike<number>>;
}

/** One library's implementation of a case. */
export interface Impl {
  /** "moongrad", "tfjs-webgpu", "jax-js", ... */
  lib: string;
  /** Builds operands; throwing (or returning a string: the reason) skips this library. */
  prepare: () => Promise<Prepared | string>;
}

/** A group: the same work done by each library. */
export interface Case {
  /** Group name, e.g. "matmul f32 256x256x256". */
  group: string;
  /** Work per iteration. */
  work: Work;
  /** Minimum timed iterations (after the warm-up; at least 2). */
  n: number;
  /**
   * Untimed iterations before timing (default 1; the first one's output is checked). More for
   * work whose first iterations still compile pipelines or allocate state (a training step).
   */
  warmup?: number;
  /** Minimum duration of the timed iterations (ms, default 300). */
  minMs?: number;
  /** Relative tolerance of the cross-library check (default 1e-3). */
  tol?: number;
  /** moongrad first (the baseline), then the peers. */
  impls: Impl[];
}

/** One library's row of a group: what the table prints and the JSON line records. */
export interface BenchResult {
  /** The bench file (basename without extension) that measured it. */
  file: string;
  /** Group name. */
  group: string;
  /** Library. */
  lib: string;
  /** Mean ms per iteration (null when skipped). */
  ms: number | null;
  /** Fastest iteration (ms). */
  minMs?: number;
  /** Slowest iteration (ms). */
  maxMs?: number;
  /** Timed iterations. */
  iters?: number;
  /** Throughput of the declared work at `ms` (null when no work was declared). */
  rate?: number | null;
  /** Unit of `rate`: "GFLOP/s", "GB/s" or "MB/s". */
  unit?: string | null;
  /** This library's ms / moongrad's ms (null for moongrad itself or when it did not run). */
  vsMoongrad?: number | null;
  /** The cross-library check ("" for moongrad, or when there is no output to compare). */
  check?: string;
  /** Why this library did not run. */
  skipped?: string;
  /** The work per iteration, as declared. */
  work?: Work;
}

/** Where a group's table goes and where its rows are recorded. */
export interface BenchIo {
  /** Prints a line (default console.log). */
  log: (line: string) => void;
  /** Records one row (default: a JSON line appended to the MG_BENCH_META file, if set). */
  note: (r: BenchResult) => void;
}

function envMetaPath(): string | null {
  try {
    return Deno.env.get("MG_BENCH_META") || null;
  } catch {
    return null;
  }
}

/** Appends `r` as one JSON line to MG_BENCH_META (nothing when it is unset). */
export function noteToMetaFile(r: BenchResult): void {
  const path = envMetaPath();
  if (!path) return;
  try {
    Deno.writeTextFileSync(path, JSON.stringify(r) + "\n", { append: true });
  } catch (e) {
    console.error(`bench meta: cannot write ${path}: ${e}`);
  }
}

const defaultIo: BenchIo = { log: (l) => console.log(l), note: noteToMetaFile };

/** The running bench file's basename without extension ("k2_bench"). */
function benchFile(): string {
  try {
    return Deno.mainModule.split("/").pop()!.replace(/\.(ts|js|mjs)$/, "");
  } catch {
    return "bench";
  }
}

/** Throughput of `work` at `ms` per iteration: GFLOP/s, else GB/s, else MB/s; else null. */
export function throughput(work: Work, ms: number): { value: number; unit: string } | null {
  if (work.flops) return { value: work.flops / ms / 1e6, unit: "GFLOP/s" };
  if (work.bytes) return { value: work.bytes / ms / 1e6, unit: "GB/s" };
  if (work.mb) return { value: work.mb / ms * 1e3, unit: "MB/s" };
  return null;
}

/** A time for the tables: "812 µs", "3.142 ms", "64.0 ms", "2.14 s". */
export function fmtMs(ms: number): string {
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 3 : 1)} ms`;
}

/** The cells of one row, in the column order of `formatTable`. */
export function rowCells(r: BenchResult): string[] {
  if (r.ms === null || r.skipped) return [r.lib, `skipped: ${r.skipped ?? "?"}`, "", "", "", ""];
  return [
    r.lib,
    fmtMs(r.ms),
    r.minMs !== undefined && r.maxMs !== undefined
      ? `${fmtMs(r.minMs)} – ${fmtMs(r.maxMs)} (${r.iters})`
      : "—",
    r.rate != null ? `${r.rate.toFixed(2)} ${r.unit}` : "—",
    r.vsMoongrad != null ? `${r.vsMoongrad.toFixed(2)}×` : "—",
    r.check || "—",
  ];
}

/** Column headers of `formatTable`. */
export const TABLE_HEADER = [
  "library",
  "time/iter (mean)",
  "min – max (iters)",
  "throughput",
  "its time / moongrad's",
  "check",
] as const;

/**
 * One group's rows as an aligned Markdown table headed by the group name: the console prints
 * it as it is, and cli/bench_report.ts writes the same text into bench/RESULTS.md.
 */
export function formatTable(group: string, rows: readonly BenchResult[]): string {
  // A "|" inside a cell would end it: escape it (Markdown shows it as "|").
  const all = [
    [...TABLE_HEADER],
    ...rows.map((r) => rowCells(r).map((c) => c.replace(/\|/g, "\\|"))),
  ];
  const widths = TABLE_HEADER.map((_, c) => Math.max(3, ...all.map((r) => r[c].length)));
  const line = (cells: string[]) => `| ${cells.map((s, c) => s.padEnd(widths[c])).join(" | ")} |`;
  return [
    `**${group}**`,
    "",
    line(all[0]),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...all.slice(1).map(line),
  ].join("\n");
}

function compare(ref: ArrayLike<number>, got: ArrayLike<number>): number {
  if (ref.length !== got.length) return Infinity;
  let scale = 0;
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    scale = Math.max(scale, Math.abs(ref[i]));
    const d = Math.abs(ref[i] - got[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
  }
  return err / (scale || 1);
}

function why(e: unknown): string {
  return e instanceof Error ? e.message.split("\n")[0] : String(e);
}

/**
 * Times `run` (already warmed up) for at least `minIters` iterations and `minMs` ms; returns
 * the time of each iteration in ms (the time `run` returns, when it returns one).
 */
export async function timeIterations(
  run: () => Promise<void | number>,
  minIters: number,
  minMs: number,
): Promise<number[]> {
  const times: number[] = [];
  const t0 = performance.now();
  while (times.length < Math.max(2, minIters) || performance.now() - t0 < minMs) {
    const t = performance.now();
    const own = await run();
    times.push(typeof own === "number" ? own : performance.now() - t);
  }
  return times;
}

/**
 * Prepares, warms up, checks and times every library of a case, then prints the group's
 * table and records its rows (see the module doc). Returns the rows.
 */
export async function benchCase(c: Case, io: BenchIo = defaultIo): Promise<BenchResult[]> {
  const file = benchFile();
  const rows: BenchResult[] = [];
  let ref: ArrayLike<number> | null = null;
  let baseMs: number | null = null;
  for (const [i, impl] of c.impls.entries()) {
    const skip = (e: unknown) =>
      rows.push({ file, group: c.group, lib: impl.lib, ms: null, skipped: why(e) });
    let p: Prepared;
    let check = "";
    try {
      const got = await impl.prepare();
      if (typeof got === "string") throw new Error(got);
      p = got;
      await p.run(); // the first warm-up, whose output is checked
      if (p.result) {
        const out = await p.result();
        if (i === 0) ref = out;
        else if (ref) {
          const e = compare(ref, out);
          check = e <= (c.tol ?? 1e-3)
            ? `matches moongrad (rel err ${e.toExponential(1)})`
            : `MISMATCH vs moongrad (rel err ${e.toExponential(1)})`;
        }
      }
    } catch (e) {
      skip(e);
      continue;
    }
    let times: number[];
    try {
      for (let w = 1; w < (c.warmup ?? 1); w++) await p.run();
      times = await timeIterations(p.run, c.n, c.minMs ?? 300);
    } catch (e) {
      skip(e);
      continue;
    }
    const ms = times.reduce((a, t) => a + t, 0) / times.length;
    if (i === 0) baseMs = ms;
    const t = throughput(c.work, ms);
    rows.push({
      file,
      group: c.group,
      lib: impl.lib,
      ms,
      minMs: Math.min(...times),
      maxMs: Math.max(...times),
      iters: times.length,
      rate: t?.value ?? null,
      unit: t?.unit ?? null,
      vsMoongrad: i > 0 && baseMs !== null ? ms / baseMs : null,
      check,
      work: c.work,
    });
  }
  io.log(formatTable(c.group, rows) + "\n");
  for (const r of rows) io.note(r);
  return rows;
}
