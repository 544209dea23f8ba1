/**
 * `deno task bench [files or folders...]`: runs each bench file (`*_bench.ts`, or the bundled
 * `*_bench.js` under .gpu/bench/) as its own `deno run` process, one after the other, with
 * stdout and stderr passed through: each file prints one table per group (bench/harness.ts).
 * Default: every `*_bench.ts` in bench/. A file that fails is reported and the others still
 * run; the exit code is 1 when any failed.
 *
 * cli/bench_report.ts calls `runBenchFiles` with a MG_BENCH_META file, into which the
 * harness appends each printed row as a JSON line; the child then may write that file only.
 *
 *   deno task bench bench/k2_bench.ts
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** Expands folders to their `*_bench.ts` / `*_bench.js` files (sorted); files stay as given. */
export async function benchFiles(targets: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const t of targets.length ? targets : ["bench/"]) {
    const info = await Deno.stat(t.startsWith("/") ? t : `${ROOT}${t}`);
    if (!info.isDirectory) {
      out.push(t);
      continue;
    }
    const names: string[] = [];
    for await (const e of Deno.readDir(t.startsWith("/") ? t : `${ROOT}${t}`)) {
      if (e.isFile && /_bench\.(ts|js)$/.test(e.name)) names.push(e.name);
    }
    out.push(...names.sort().map((n) => `${t.replace(/\/$/, "")}/${n}`));
  }
  return out;
}

/** Outcome of one bench file. */
export interface FileRun {
  /** The file as run. */
  file: string;
  /** Its exit code. */
  code: number;
  /** Wall time of the process (ms). */
  ms: number;
}

/**
 * Runs each bench file in its own process (see the module doc); `metaPath` is passed as
 * MG_BENCH_META (the one file the child may write).
 */
export async function runBenchFiles(
  targets: readonly string[],
  options: { metaPath?: string } = {},
): Promise<FileRun[]> {
  const runs: FileRun[] = [];
  for (const file of await benchFiles(targets)) {
    // The bundles under .gpu/ are excluded by deno.json: run them without the config. The
    // peers are checked against deno.lock (deno.json itself turns the lockfile off).
    const bundled = file.startsWith(".gpu") || file.includes("/.gpu/");
    const args = [
      "run",
      ...(bundled ? ["--no-config", "--no-check"] : ["--lock=deno.lock"]),
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      "--allow-run=python3", // the numpy peer (bench/numpy_peer.ts)
      ...(options.metaPath ? [`--allow-write=${options.metaPath}`] : []),
      file,
    ];
    const env: Record<string, string> = {};
    if (options.metaPath) env.MG_BENCH_META = options.metaPath;
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT,
      env,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    const ms = performance.now() - t0;
    if (out.code !== 0) console.error(`${file}: exited with ${out.code}`);
    runs.push({ file, code: out.code, ms });
  }
  return runs;
}

if (import.meta.main) {
  const runs = await runBenchFiles(Deno.args);
  const failed = runs.filter((r) => r.code !== 0);
  if (failed.length) {
    console.error(`failed: ${failed.map((r) => r.file).join(", ")}`);
    Deno.exit(1);
  }
}
