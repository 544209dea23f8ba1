/**
 * One bench case = one `Deno.bench` group holding moongrad (the baseline) and each peer at
 * the same size. For every library the harness: builds the operands, runs one warm-up (which
 * compiles pipelines), checks the result against moongrad's (max |peer − moongrad| / max
 * |moongrad|), times a short loop of its own and prints time and throughput (Deno.bench's
 * table has no throughput column), then registers the Deno.bench. Every timed iteration
 * ends by waiting for the GPU (see peers.ts for how each library does it).
 *
 * When MG_BENCH_META names a file (cli/bench_report.ts sets it), one JSON line per library
 * and case is appended to it: group, name, work (flops/bytes), the loop time and the check.
 */

/** The work of one iteration: floating-point operations and/or minimal bytes moved. */
export interface Work {
  /** Floating-point operations per iteration (GFLOP/s is printed when given). */
  flops?: number;
  /** Minimal bytes read + written per iteration (GB/s is printed when given). */
  bytes?: number;
}

/** What one library prepares for a case. */
export interface Prepared {
  /** Records one iteration and waits until the GPU has executed it. */
  run: () => Promise<void>;
  /** The output of one iteration, read back, for the cross-library check (optional). */
  result?: () => Promise<ArrayLike<number>>;
}

/** One library's implementation of a case. */
export interface Impl {
  /** "moongrad", "tfjs-webgpu" or "jax-js". */
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
  /** Deno.bench iterations (after one warm-up). */
  n: number;
  /** Minimum duration of the printed throughput loop (ms; at least 2 iterations). */
  minMs?: number;
  /** Relative tolerance of the cross-library check (default 1e-3). */
  tol?: number;
  /** moongrad first (the baseline), then the peers. */
  impls: Impl[];
}

const metaPath = (() => {
  try {
    return Deno.env.get("MG_BENCH_META") ?? null;
  } catch {
    return null;
  }
})();

function note(record: Record<string, unknown>): void {
  if (!metaPath) return;
  try {
    Deno.writeTextFileSync(metaPath, JSON.stringify(record) + "\n", { append: true });
  } catch (e) {
    console.error(`bench meta: cannot write ${metaPath}: ${e}`);
  }
}

/** "12.3 GFLOP/s" / "4.5 GB/s" for a time in ms. */
export function throughput(work: Work, ms: number): string {
  const parts: string[] = [];
  if (work.flops) parts.push(`${(work.flops / ms / 1e6).toFixed(2)} GFLOP/s`);
  if (work.bytes) parts.push(`${(work.bytes / ms / 1e6).toFixed(2)} GB/s`);
  return parts.join(", ");
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

/** Times `run` for at least `minMs` and 2 iterations (after the warm-up); returns ms/iter. */
export async function loop(run: () => Promise<void>, minMs: number): Promise<number> {
  let iters = 0;
  const t0 = performance.now();
  while (iters < 2 || performance.now() - t0 < minMs) {
    await run();
    iters++;
  }
  return (performance.now() - t0) / iters;
}

/** Prepares, checks, times and registers every library of a case (see the module doc). */
export async function benchCase(c: Case): Promise<void> {
  let ref: ArrayLike<number> | null = null;
  let baseMs: number | null = null;
  for (const [i, impl] of c.impls.entries()) {
    const label = `  ${c.group.padEnd(36)} ${impl.lib.padEnd(12)}`;
    let p: Prepared;
    let check = "";
    try {
      const got = await impl.prepare();
      if (typeof got === "string") throw new Error(got);
      p = got;
      await p.run();
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
      console.log(`${label} skipped: ${why(e)}`);
      note({ group: c.group, lib: impl.lib, skipped: why(e) });
      continue;
    }
    let ms: number;
    try {
      ms = await loop(p.run, c.minMs ?? 300);
    } catch (e) {
      console.log(`${label} skipped: ${why(e)}`);
      note({ group: c.group, lib: impl.lib, skipped: why(e) });
      continue;
    }
    if (i === 0) baseMs = ms;
    const vs = i > 0 && baseMs !== null ? `  moongrad ${(ms / baseMs).toFixed(2)}x as fast` : "";
    console.log(
      `${label} ${ms.toFixed(2).padStart(9)} ms  ${throughput(c.work, ms)}${vs}${
        check ? `  ${check}` : ""
      }`,
    );
    note({ group: c.group, lib: impl.lib, ...c.work, loopMs: ms, check });
    Deno.bench({
      name: impl.lib,
      group: c.group,
      baseline: i === 0,
      n: c.n,
      warmup: 1,
      fn: p.run,
    });
  }
}
