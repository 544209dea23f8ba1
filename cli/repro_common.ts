/**
 * Shared pieces of the reproduction scripts (cli/repro_*.ts): run the trainer as a child
 * process and read its metrics back, and make `lineChart`'s SVG standalone (with the styles
 * the HTML report normally supplies).
 */
import { DEFAULT_CORPUS, loadDefaultCorpus } from "./data.ts";
import { type MetricRecord, readMetrics } from "./metrics.ts";

/** The styles `lineChart` output expects (copied from the report's stylesheet rules). */
const STYLE = "<style>svg{background:#fff}.t{font:600 13px sans-serif}" +
  ".a{font:11px sans-serif;fill:#444}.n{font:13px sans-serif;fill:#888}" +
  ".g{stroke:#eee}.ax{stroke:#999}.f{fill:none;stroke:#bbb}</style>";

/** Makes a `lineChart` SVG standalone: xmlns kept, a white background and the styles added. */
export function standalone(svg: string): string {
  return svg.replace(/^(<svg[^>]*>)/, `$1${STYLE}<rect width="100%" height="100%" fill="#fff"/>`);
}

/** Stacks several standalone SVG charts vertically into one SVG. */
export function stack(svgs: string[], width = 640, height = 280): string {
  const inner = svgs.map((s, i) => s.replace(/^<svg /, `<svg y="${i * height}" `)).join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${
    height * svgs.length
  }" viewBox="0 0 ${width} ${height * svgs.length}">\n${inner}\n</svg>\n`;
}

/** Runs `deno task train` with `args` (output directory `out`), echoing its progress lines. */
export async function train(args: string[], out: string): Promise<MetricRecord[]> {
  await Deno.remove(out, { recursive: true }).catch(() => {});
  const t0 = performance.now();
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      new URL("./train.ts", import.meta.url).pathname,
      ...args,
      "--checkpoint-every",
      "100000",
      "--out",
      out,
    ],
    stdout: "inherit",
    stderr: "inherit",
  });
  const status = await cmd.output();
  if (!status.success) throw new Error(`train ${args.join(" ")} failed (exit ${status.code})`);
  console.log(`  (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  return await readMetrics(`${out}/metrics.jsonl`);
}

/** The bench/results/ directory (created). */
export async function resultsDir(): Promise<URL> {
  const dir = new URL("../bench/results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** The numeric value of `--name X` in Deno.args, or `fallback`. */
export function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(Deno.args[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number, got ${Deno.args[i + 1]}`);
  return v;
}

/**
 * The trainer flags that select the current default corpus by name (`--data
 * data/moongrad-src-vN.txt`), after checking its SHA-256, so that a reproduction keeps training
 * on the same bytes even after the default moves to a newer version.
 */
export async function frozenCorpus(): Promise<string[]> {
  const { bytes } = await loadDefaultCorpus();
  console.log(`corpus: ${DEFAULT_CORPUS.path} (${DEFAULT_CORPUS.name}), ${bytes.length} bytes`);
  return ["--data", DEFAULT_CORPUS.path];
}
