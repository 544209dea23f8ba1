/**
 * `deno task profile [--optimizer muonclip|adamw] [--batch 4] [--seq 64] [--no-timestamps]
 * [--top N]`: where the time of one tiny-K2 training step goes: per phase (forward =
 * `model.loss`, backward = `loss.backward()`, optimizer = `opt.step()`), per op family (kernel
 * names grouped by `opFamily`), the dispatch count, the GPU time and the CPU time spent
 * recording; with `--top N`, the N slowest dispatches with their workgroup grids.
 *
 * Method. One warm-up step (compiles the pipelines), then the profiled step with a
 * `DispatchProfiler` installed (core/runtime.ts; nothing is installed otherwise):
 * - GPU time, where the device has "timestamp-query": every dispatch gets its own compute pass
 *   with timestamp writes at its beginning and end; each batch resolves its queries before it
 *   is submitted and reads them back after; a dispatch's time is end − begin. Pass boundaries
 *   add a little work, so the phase wall times of a profiled step are an upper bound.
 * - Without "timestamp-query": no GPU column; the phase wall times (a sync after each phase)
 *   and the CPU recording times are what is measured.
 * - CPU time before a dispatch: the main thread's time from the previous dispatch (or the
 *   phase start) to this one, less the time spent submitting batches in between (reported
 *   per phase as "submit"): the op's own host work (shape checks, allocation, kernel lookup,
 *   parameter packing), plus anything else between ops, which is charged to the next op,
 *   including awaits (MuonClip's step reads back its max logits).
 * - Phase wall time: from the phase's start to the end of an `mg.sync()` after it.
 * Dispatch counts are checked against `runtimeStats()` (tests/profile_test.ts).
 */
import * as mg from "../mod.ts";
import { gpuDevice } from "../core/device.ts";
import {
  type DispatchProfiler,
  MAX_DISPATCHES_PER_BATCH,
  runtimeStats,
  setDispatchProfiler,
} from "../core/runtime.ts";
import { BufferUsage, MAP_READ } from "../core/webgpu_flags.ts";
import { makeConfig } from "../nn/config.ts";
import type { KimiConfig } from "../nn/config.ts";
import { KimiLM } from "../nn/model.ts";
import { AdamW, MuonClip } from "../optim/mod.ts";

/** `GPUBufferUsage.QUERY_RESOLVE` (the WebGPU specification's value). */
const QUERY_RESOLVE = 0x0200;

/** The phases of one training step. */
export const PHASES = ["forward", "backward", "optimizer"] as const;
/** One phase of a training step. */
export type Phase = typeof PHASES[number];

/** Op families: the first rule whose pattern matches a kernel name names its family. */
const FAMILIES: [RegExp, string][] = [
  [/^(gram|ns_|muon_)/, "Muon / Newton–Schulz"],
  [/^(adamw|sgd)_/, "AdamW / SGD update"],
  [/^(qk_clip|flag_non_finite)/, "QK-Clip, finite check"],
  [/^moe_|^topk|^index_add|^scatter_add|^gather/, "MoE routing / dispatch / combine"],
  [/^grouped|^gmm/, "MoE grouped matmul"],
  [/^attention/, "attention"],
  [/matmul|^mm/, "matmul"],
  [/^rms_norm|^rmsnorm/, "RMSNorm"],
  [/^rope|rotary/, "RoPE"],
  [/^cross_entropy|softmax|^lse/, "cross-entropy / softmax"],
  [/^(sum|mean|max|min|reduce|acc)/, "reductions"],
  [/^(copy|contiguous|concat|cat|slice|alias_copy|fill|transpose|permute)/, "copies / layout"],
  [/^embedding|^take|^index/, "embedding / indexing"],
];

/**
 * The op family of a kernel name (the name itself when no rule matches). A co-launched pair
 * ("a+b", core/colaunch.ts) belongs to its kernels' family, or to "a family + b family" when
 * they differ.
 */
export function opFamily(kernel: string): string {
  if (kernel.includes("+")) {
    return [...new Set(kernel.split("+").map(opFamily))].join(" + ");
  }
  for (const [re, fam] of FAMILIES) if (re.test(kernel)) return fam;
  if (
    /^(add|sub|mul|div|neg|exp|log|sqrt|rsqrt|silu|swiglu|sigmoid|relu|pow|where|scale)/.test(
      kernel,
    )
  ) {
    return "pointwise";
  }
  return kernel;
}

/** Totals of one (phase, family) cell. */
export interface FamilyStats {
  /** Dispatches recorded. */
  dispatches: number;
  /** GPU time (ms) from timestamps, or null without "timestamp-query". */
  gpuMs: number | null;
  /** CPU time (ms) spent recording. */
  cpuMs: number;
  /** The distinct kernel names in the family. */
  kernels: Set<string>;
}

/** The profile of one training step. */
export interface StepProfile {
  /** "timestamp-query per dispatch" or "CPU-side only (no timestamp-query)". */
  method: string;
  /** Per phase: family → totals. */
  families: Record<Phase, Map<string, FamilyStats>>;
  /** Per phase: wall time to the end of a sync after the phase (ms). */
  wallMs: Record<Phase, number>;
  /** Dispatches the profiler saw. */
  dispatches: number;
  /** `runtimeStats().dispatches` over the same step. */
  runtimeDispatches: number;
  /** Per phase: time spent finishing and submitting batches (ms), and the submits. */
  submit: Record<Phase, { ms: number; count: number }>;
  /** Dispatches recorded without a timestamp (query capacity exceeded; normally 0). */
  untimed: number;
  /** Every dispatch in recording order: phase, kernel, workgroup grid and GPU time. */
  launches: LaunchRecord[];
}

/** One dispatch of a profiled step. */
export interface LaunchRecord {
  /** The phase it was recorded in. */
  phase: Phase;
  /** The kernel's name ("a+b" for a co-launched pair). */
  kernel: string;
  /** Workgroups dispatched, "x×y×z". */
  grid: string;
  /** GPU time (ms) from timestamps, or null without them. */
  gpuMs: number | null;
}

/** Collects per-dispatch names, CPU times and (when available) GPU timestamps. */
class StepProfiler implements DispatchProfiler {
  phase: Phase = "forward";
  readonly families: Record<Phase, Map<string, FamilyStats>> = {
    forward: new Map(),
    backward: new Map(),
    optimizer: new Map(),
  };
  dispatches = 0;
  untimed = 0;
  last = performance.now();
  readonly launches: LaunchRecord[] = [];
  readonly #querySet: GPUQuerySet | null;
  readonly #capacity = MAX_DISPATCHES_PER_BATCH;
  /** The cells (and records) of the open batch's timed dispatches, in query order. */
  #timed: { cell: FamilyStats; launch: LaunchRecord }[] = [];
  #copied: {
    staging: GPUBuffer;
    resolve: GPUBuffer;
    cells: { cell: FamilyStats; launch: LaunchRecord }[];
  } | null = null;
  readonly pending: Promise<void>[] = [];
  /** Per phase: time in `finish()` + `queue.submit()` (ms) and submits. */
  readonly submitMs: Record<Phase, number> = { forward: 0, backward: 0, optimizer: 0 };
  readonly submits: Record<Phase, number> = { forward: 0, backward: 0, optimizer: 0 };
  #submitStart = 0;
  /** Submit time since the last dispatch (not charged to the next op). */
  #inSubmit = 0;

  constructor(readonly device: GPUDevice, timestamps: boolean) {
    this.#querySet = timestamps
      ? device.createQuerySet({ label: "profile", type: "timestamp", count: 2 * this.#capacity })
      : null;
  }

  cell(kernel: string): FamilyStats {
    const fam = opFamily(kernel);
    const m = this.families[this.phase];
    let c = m.get(fam);
    if (!c) {
      c = { dispatches: 0, gpuMs: this.#querySet ? 0 : null, cpuMs: 0, kernels: new Set() };
      m.set(fam, c);
    }
    return c;
  }

  dispatch(
    kernel: string,
    groups: readonly [number, number?, number?] = [1],
  ): GPUComputePassTimestampWrites | undefined {
    const now = performance.now();
    const c = this.cell(kernel);
    const launch: LaunchRecord = {
      phase: this.phase,
      kernel,
      grid: `${groups[0]}×${groups[1] ?? 1}×${groups[2] ?? 1}`,
      gpuMs: this.#querySet ? 0 : null,
    };
    this.launches.push(launch);
    c.dispatches++;
    c.cpuMs += Math.max(0, now - this.last - this.#inSubmit);
    this.#inSubmit = 0;
    c.kernels.add(kernel);
    this.dispatches++;
    this.last = now;
    if (!this.#querySet) return undefined;
    if (this.#timed.length >= this.#capacity) {
      this.untimed++;
      return undefined;
    }
    const j = this.#timed.length;
    this.#timed.push({ cell: c, launch });
    return {
      querySet: this.#querySet,
      beginningOfPassWriteIndex: 2 * j,
      endOfPassWriteIndex: 2 * j + 1,
    };
  }

  beforeSubmit(encoder: GPUCommandEncoder): void {
    this.#submitStart = performance.now();
    if (!this.#querySet || this.#timed.length === 0) return;
    const bytes = this.#timed.length * 16;
    const resolve = this.device.createBuffer({
      label: "profile resolve",
      size: bytes,
      usage: QUERY_RESOLVE | BufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      label: "profile staging",
      size: bytes,
      usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
    });
    encoder.resolveQuerySet(this.#querySet, 0, 2 * this.#timed.length, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, staging, 0, bytes);
    this.#copied = { staging, resolve, cells: this.#timed };
    this.#timed = [];
  }

  afterSubmit(): void {
    const spent = performance.now() - this.#submitStart;
    this.submitMs[this.phase] += spent;
    this.submits[this.phase]++;
    this.#inSubmit += spent;
    const c = this.#copied;
    this.#copied = null;
    if (!c) return;
    this.pending.push(
      c.staging.mapAsync(MAP_READ).then(() => {
        const t = new BigUint64Array(c.staging.getMappedRange().slice(0));
        c.staging.unmap();
        c.cells.forEach(({ cell, launch }, j) => {
          const ns = t[2 * j + 1] >= t[2 * j] ? Number(t[2 * j + 1] - t[2 * j]) : 0;
          cell.gpuMs = (cell.gpuMs ?? 0) + ns / 1e6;
          launch.gpuMs = ns / 1e6;
        });
      }).finally(() => {
        c.staging.destroy();
        c.resolve.destroy();
      }),
    );
  }

  destroy(): void {
    this.#querySet?.destroy();
  }
}

/** What one training step needs. */
export interface StepSetup {
  /** The model (training mode). */
  model: KimiLM;
  /** The optimizer. */
  opt: { step(stats: mg.nn.StepStats): Promise<void> };
  /** Input ids [B, T]. */
  x: mg.Tensor;
  /** Targets [B, T]. */
  y: mg.Tensor;
}

/** One training step, phase by phase, each followed by a sync; returns the wall time of each. */
async function step(s: StepSetup, onPhase?: (p: Phase) => void): Promise<Record<Phase, number>> {
  const wall = { forward: 0, backward: 0, optimizer: 0 };
  const stats = new mg.nn.StepStats();
  let t = performance.now();
  onPhase?.("forward");
  const loss = s.model.loss(s.x, s.y, { stats });
  await mg.sync();
  wall.forward = performance.now() - t;
  t = performance.now();
  onPhase?.("backward");
  loss.backward();
  await mg.sync();
  wall.backward = performance.now() - t;
  t = performance.now();
  onPhase?.("optimizer");
  await s.opt.step(stats);
  await mg.sync();
  wall.optimizer = performance.now() - t;
  stats.dispose();
  loss.dispose();
  s.model.zeroGrad();
  return wall;
}

/**
 * Profiles one training step after `warmup` unprofiled ones (see the module doc).
 * `timestamps: false` forces the CPU-side method.
 */
export async function profileStep(
  s: StepSetup,
  options: { warmup?: number; timestamps?: boolean } = {},
): Promise<StepProfile> {
  for (let i = 0; i < (options.warmup ?? 1); i++) await step(s);
  const device = gpuDevice("profile");
  const timestamps = (options.timestamps ?? true) && device.features.has("timestamp-query");
  const p = new StepProfiler(device, timestamps);
  const before = runtimeStats().dispatches;
  setDispatchProfiler(p);
  let wallMs: Record<Phase, number>;
  try {
    wallMs = await step(s, (phase) => {
      p.phase = phase;
      p.last = performance.now();
    });
  } finally {
    setDispatchProfiler(null);
  }
  const runtimeDispatches = runtimeStats().dispatches - before;
  await Promise.all(p.pending);
  p.destroy();
  return {
    method: timestamps
      ? "GPU time from timestamp-query writes around each dispatch (one compute pass each)"
      : "CPU-side only: no timestamp-query on this device (phase wall times with a sync after each phase)",
    families: p.families,
    wallMs,
    dispatches: p.dispatches,
    runtimeDispatches,
    submit: {
      forward: { ms: p.submitMs.forward, count: p.submits.forward },
      backward: { ms: p.submitMs.backward, count: p.submits.backward },
      optimizer: { ms: p.submitMs.optimizer, count: p.submits.optimizer },
    },
    untimed: p.untimed,
    launches: p.launches,
  };
}

function f(ms: number | null): string {
  return ms === null ? "—" : ms >= 100 ? ms.toFixed(0) : ms.toFixed(ms >= 10 ? 1 : 2);
}

/**
 * The profile as Markdown: a summary per phase, one table per phase (families by time) and,
 * with `top` > 0, the `top` slowest dispatches (by GPU time; by recording order without
 * timestamps) with their grids.
 */
export function formatProfile(p: StepProfile, top = 0): string {
  const lines: string[] = [];
  const gpuOf = (m: Map<string, FamilyStats>) =>
    [...m.values()].reduce((a, c) => a + (c.gpuMs ?? 0), 0);
  const sumOf = (m: Map<string, FamilyStats>, k: "dispatches" | "cpuMs") =>
    [...m.values()].reduce((a, c) => a + c[k], 0);
  const hasGpu = PHASES.some((ph) => [...p.families[ph].values()].some((c) => c.gpuMs !== null));
  lines.push(
    "| phase | wall (sync after) | GPU time (sum of dispatches) | CPU between dispatches | submit (count) | dispatches |",
    "| ----- | ----------------- | ---------------------------- | ---------------------- | -------------- | ---------- |",
  );
  for (const ph of PHASES) {
    const m = p.families[ph];
    lines.push(
      `| ${ph} | ${f(p.wallMs[ph])} ms | ${hasGpu ? `${f(gpuOf(m))} ms` : "—"} | ${
        f(sumOf(m, "cpuMs"))
      } ms | ${f(p.submit[ph].ms)} ms (${p.submit[ph].count}) | ${sumOf(m, "dispatches")} |`,
    );
  }
  const total = (k: "dispatches" | "cpuMs") =>
    PHASES.reduce((a, ph) => a + sumOf(p.families[ph], k), 0);
  lines.push(
    `| step | ${f(PHASES.reduce((a, ph) => a + p.wallMs[ph], 0))} ms | ${
      hasGpu ? `${f(PHASES.reduce((a, ph) => a + gpuOf(p.families[ph]), 0))} ms` : "—"
    } | ${f(total("cpuMs"))} ms | ${f(PHASES.reduce((a, ph) => a + p.submit[ph].ms, 0))} ms (${
      PHASES.reduce((a, ph) => a + p.submit[ph].count, 0)
    }) | ${total("dispatches")} |`,
    "",
  );
  for (const ph of PHASES) {
    const m = p.families[ph];
    const gpu = gpuOf(m);
    const rows = [...m.entries()].sort((a, b) =>
      hasGpu ? (b[1].gpuMs ?? 0) - (a[1].gpuMs ?? 0) : b[1].cpuMs - a[1].cpuMs
    );
    lines.push(
      `**${ph}**`,
      "",
      "| op family | dispatches | GPU ms | GPU % | CPU ms before its dispatches | kernels |",
      "| --------- | ---------- | ------ | ----- | ---------------------------- | ------- |",
    );
    for (const [fam, c] of rows) {
      const share = c.gpuMs !== null && gpu > 0 ? `${(100 * c.gpuMs / gpu).toFixed(1)}` : "—";
      const ks = [...c.kernels].sort();
      lines.push(
        `| ${fam} | ${c.dispatches} | ${f(c.gpuMs)} | ${share} | ${f(c.cpuMs)} | ${
          ks.length > 4 ? `${ks.slice(0, 4).join(", ")}, … (${ks.length})` : ks.join(", ")
        } |`,
      );
    }
    lines.push("");
  }
  if (top > 0) {
    const slowest = p.launches.map((l, i) => ({ ...l, i }))
      .sort((a, b) => (b.gpuMs ?? 0) - (a.gpuMs ?? 0) || a.i - b.i).slice(0, top);
    lines.push(
      `**the ${slowest.length} slowest dispatches**`,
      "",
      "| # in step | phase | kernel | workgroups | GPU ms |",
      "| --------- | ----- | ------ | ---------- | ------ |",
      ...slowest.map((l) =>
        `| ${l.i + 1} | ${l.phase} | ${l.kernel} | ${l.grid} | ${f(l.gpuMs)} |`
      ),
      "",
    );
  }
  return lines.join("\n").trimEnd();
}

/** A tiny-K2 step setup (seed 1, random byte batch) for the CLI and the test. */
export function tinyStep(
  config: KimiConfig,
  optimizer: "muonclip" | "adamw",
  batch: number,
  seq: number,
): StepSetup {
  const model = new KimiLM(config, { seed: 1 });
  model.train();
  const opt = optimizer === "adamw"
    ? new AdamW(model, { lr: 1e-3, weightDecay: 0.1 })
    : new MuonClip(model, { lr: 0.02, weightDecay: 0.1, tau: 100 });
  const ids = (seed: number) =>
    Array.from({ length: batch * seq }, (_, i) => (i * 131 + seed * 17) % config.vocab_size);
  const x = mg.tensor(ids(1), { shape: [batch, seq], dtype: "i32" });
  const y = mg.tensor(ids(2), { shape: [batch, seq], dtype: "i32" });
  return { model, opt, x, y };
}

if (import.meta.main) {
  const args = Deno.args;
  const opt = (name: string, dflt: string) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
  };
  const optimizer = opt("optimizer", "muonclip");
  if (optimizer !== "muonclip" && optimizer !== "adamw") {
    console.error(`--optimizer must be muonclip or adamw, got ${optimizer}`);
    Deno.exit(2);
  }
  const [batch, seq] = [Number(opt("batch", "4")), Number(opt("seq", "64"))];
  const info = await mg.init();
  const timestamps = !args.includes("--no-timestamps");
  const top = Number(opt("top", "0"));
  if (!Number.isInteger(top) || top < 0) {
    console.error(`--top must be a whole number >= 0, got ${opt("top", "0")}`);
    Deno.exit(2);
  }
  const p = await profileStep(tinyStep(makeConfig("tiny"), optimizer, batch, seq), { timestamps });
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const head = [
    `One training step of the tiny preset, ${optimizer === "adamw" ? "AdamW" : "MuonClip"}, ` +
    `batch ${batch} × ${seq}, after one warm-up step. Adapter: ${info.description}. ` +
    `Date: ${date}. Command: \`deno task profile --optimizer ${optimizer} --batch ${batch} ` +
    `--seq ${seq}${timestamps ? "" : " --no-timestamps"}${top ? ` --top ${top}` : ""}\`.`,
    "",
    `Method: ${p.method}; CPU before a dispatch = main-thread time since the previous dispatch, ` +
    `submits excluded (awaited readbacks included). Dispatches: ${p.dispatches} seen by the profiler, ${p.runtimeDispatches} counted by ` +
    `runtimeStats()${p.untimed ? ` (${p.untimed} without a timestamp)` : ""}.`,
    "",
  ].join("\n");
  console.log(head + "\n" + formatProfile(p, top));
}
