/**
 * `deno task bench:report [bench files...]`: runs the bench files (bench/run.ts: one
 * `deno run` per file; each prints one table per group from bench/harness.ts and records the
 * same rows as JSON lines in a MG_BENCH_META file), then writes a generated section of
 * bench/RESULTS.md (between the markers below; everything else in the file is kept) with the
 * adapter, date, Deno version, the very tables the console printed (formatTable of the
 * recorded rows) and one SVG bar chart per bench file in bench/results/.
 *
 * Right after bench/k2_bench.ts, when /usr/bin/python3 (or MG_TORCH_PYTHON) has torch,
 * bench/torch_bench.py times the same tiny-K2 training steps in PyTorch on the CPU, from the
 * same initial weights and batch (bench/torch_export.ts writes them); its rows join the
 * training-step groups with "its time / moongrad's" filled in here, and the merged tables are
 * printed again. Without torch the section says why it is missing. Then `deno run
 * cli/profile.ts` (deno task profile) adds the per-op-family profile of one training step.
 *
 * With OUT set (the GPU machine's output folder), RESULTS.md and the charts are copied there.
 * Set MG_BENCH_RESULTS to write elsewhere than bench/RESULTS.md, and MG_BENCH_TAG (e.g. "gpu")
 * to keep a second generated section (own markers, charts named `<file>-<tag>.svg`).
 * MG_BENCH_TORCH=0 skips PyTorch, MG_BENCH_PROFILE=0 the profile.
 */
import { type BenchResult, formatTable } from "../bench/harness.ts";
import { benchFiles, runBenchFiles } from "../bench/run.ts";

const TAG = Deno.env.get("MG_BENCH_TAG") ?? "";
const START = `<!-- bench:report start${TAG ? ` ${TAG}` : ""} -->`;
const END = `<!-- bench:report end${TAG ? ` ${TAG}` : ""} -->`;
const root = new URL("../", import.meta.url);
const resultsMd = Deno.env.get("MG_BENCH_RESULTS") ?? new URL("bench/RESULTS.md", root).pathname;
const chartDir = new URL("bench/results/", root).pathname;

/** A group of one file: its rows in the order they were measured. */
interface Group {
  group: string;
  rows: BenchResult[];
}

const COLORS: Record<string, string> = {
  moongrad: "#2f6fdf",
  "tfjs-webgpu": "#f29c1f",
  "jax-js": "#3aa657",
};

async function adapterName(): Promise<string> {
  try {
    const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
    return a ? `${a.info.description || a.info.vendor} (${a.info.vendor || "?"})` : "none";
  } catch (e) {
    return `unknown (${e})`;
  }
}

async function readRows(path: string): Promise<BenchResult[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as BenchResult);
}

const TORCH_PYTHON = Deno.env.get("MG_TORCH_PYTHON") ?? "/usr/bin/python3";

/** Why PyTorch cannot run here, or null when `import torch` works. */
async function torchMissing(): Promise<string | null> {
  if (Deno.env.get("MG_BENCH_TORCH") === "0") return "skipped (MG_BENCH_TORCH=0)";
  try {
    const out = await new Deno.Command(TORCH_PYTHON, {
      args: ["-c", "import torch; print(torch.__version__)"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.code === 0) return null;
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop();
    return `${TORCH_PYTHON} cannot import torch (${err})`;
  } catch (e) {
    return `${TORCH_PYTHON} not runnable (${e instanceof Error ? e.message : e})`;
  }
}

/**
 * PyTorch's rows for the training-step groups: exports moongrad's initial weights and batch
 * (bench/torch_export.ts), then runs bench/torch_bench.py on them. Returns the rows and the
 * torch script's header line, or the reason it did not run.
 */
async function runTorch(): Promise<{ rows: BenchResult[]; about: string } | string> {
  const missing = await torchMissing();
  if (missing) return missing;
  const dir = await Deno.makeTempDir({ prefix: "mg-torch-" });
  try {
    const exp = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        `--allow-write=${dir}`,
        "bench/torch_export.ts",
        dir,
      ],
      cwd: root.pathname,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (exp.code !== 0) return `bench/torch_export.ts exited with ${exp.code}`;
    const json = `${dir}/torch_rows.jsonl`;
    const py = await new Deno.Command(TORCH_PYTHON, {
      args: ["bench/torch_bench.py", "--k2-dir", dir, "--json", json],
      cwd: root.pathname,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(py.stdout);
    console.log(text.trimEnd());
    if (py.code !== 0) return `bench/torch_bench.py exited with ${py.code}`;
    return { rows: await readRows(json), about: text.split("\n")[0] };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Adds torch's rows to their groups, with "its time / moongrad's" from the moongrad row. */
function mergeRows(groups: Map<string, Group>, extra: BenchResult[]): Group[] {
  const touched: Group[] = [];
  for (const r of extra) {
    const g = groups.get(r.group) ?? { group: r.group, rows: [] };
    groups.set(r.group, g);
    const base = g.rows.find((x) => x.lib === "moongrad")?.ms ?? null;
    g.rows.push({ ...r, vsMoongrad: base && r.ms ? r.ms / base : null });
    if (!touched.includes(g)) touched.push(g);
  }
  return touched;
}

/** The markdown profile of one training step (cli/profile.ts), or why it is missing. */
async function runProfile(): Promise<string> {
  if (Deno.env.get("MG_BENCH_PROFILE") === "0") return "Skipped (MG_BENCH_PROFILE=0).";
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-env", "--allow-sys", "cli/profile.ts"],
    cwd: root.pathname,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trimEnd();
  console.log(text);
  return out.code === 0 ? text : `cli/profile.ts exited with ${out.code}.`;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Horizontal grouped bars of throughput, one block per group, one bar per library. */
function svgChart(title: string, groups: Group[]): string {
  const bars: { group: string; lib: string; value: number; unit: string }[] = [];
  for (const g of groups) {
    for (const r of g.rows) {
      if (r.ms !== null && r.rate != null && r.unit) {
        bars.push({ group: g.group, lib: r.lib, value: r.rate, unit: r.unit });
      }
    }
  }
  const max = Math.max(1e-9, ...bars.map((b) => b.value));
  const [left, width, barH, gap] = [260, 420, 14, 12];
  let y = 40;
  const parts: string[] = [];
  for (const g of groups) {
    const gb = bars.filter((b) => b.group === g.group);
    if (!gb.length) continue;
    parts.push(`<text x="8" y="${y + 11}" font-weight="bold">${esc(g.group)}</text>`);
    y += 17;
    for (const b of gb) {
      const w = Math.max(1, (b.value / max) * width);
      parts.push(
        `<text x="${left - 6}" y="${y + 11}" text-anchor="end">${esc(b.lib)}</text>`,
        `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${
          COLORS[b.lib] ?? "#888"
        }"/>`,
        `<text x="${(left + w + 4).toFixed(1)}" y="${y + 11}">${
          b.value.toFixed(2)
        } ${b.unit}</text>`,
      );
      y += barH + 3;
    }
    y += gap;
  }
  const h = y + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${
      left + width + 130
    }" height="${h}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="8" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}

if (import.meta.main) {
  const targets = Deno.args;
  const adapter = await adapterName();
  let load = "unknown";
  try {
    load = Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
  } catch { /* not on this system */ }
  const metaPath = await Deno.makeTempFile({ prefix: "mg-bench-meta-", suffix: ".jsonl" });
  const files = await benchFiles(targets);
  let torch: { rows: BenchResult[]; about: string } | string =
    "not run (bench/k2_bench.ts was not among the files)";
  const failed: string[] = [];
  for (const f of files) {
    const [run] = await runBenchFiles([f], { metaPath });
    if (run.code !== 0) failed.push(`${f} (exit ${run.code})`);
    // PyTorch right after moongrad's training steps: the same machine state, back to back.
    if (/k2_bench\.(ts|js)$/.test(f)) torch = await runTorch();
  }
  const rows = await readRows(metaPath);
  await Deno.remove(metaPath);
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const byFile = new Map<string, Map<string, Group>>();
  for (const r of rows) {
    const groups = byFile.get(r.file) ?? new Map<string, Group>();
    byFile.set(r.file, groups);
    const g = groups.get(r.group) ?? { group: r.group, rows: [] };
    groups.set(r.group, g);
    g.rows.push(r);
  }
  let torchNote: string;
  if (typeof torch === "string") {
    torchNote = `PyTorch: ${torch}.`;
  } else {
    const k2 = byFile.get("k2_bench") ?? new Map<string, Group>();
    byFile.set("k2_bench", k2);
    const merged = mergeRows(k2, torch.rows.map((r) => ({ ...r, file: "k2_bench" })));
    console.log("\nTraining steps, moongrad and PyTorch back to back:\n");
    for (const g of merged) console.log(formatTable(g.group, g.rows) + "\n");
    const ratios = merged.flatMap((g) =>
      g.rows.filter((r) => r.vsMoongrad != null).map((r) =>
        `${g.group}: moongrad ${r.vsMoongrad!.toFixed(2)}× as fast as ${r.lib}`
      )
    );
    torchNote =
      `PyTorch (${torch.about.replace(/\.$/, "")}; bench/torch_bench.py, run right after ` +
      "k2_bench from moongrad's initial weights and batch): " +
      (ratios.length ? ratios.join("; ") : "no ratio (a moongrad training step is missing)") + ".";
    console.log(torchNote);
  }
  await Deno.mkdir(chartDir, { recursive: true });
  const sections: string[] = [];
  const headline: { lib: string; ratio: number }[] = [];
  for (const [file, groups] of byFile) {
    const list = [...groups.values()];
    const chart = `${file}${TAG ? `-${TAG}` : ""}.svg`;
    sections.push(`### ${file}`);
    // A chart only where some case declared its work (throughput is what the bars show).
    if (list.some(({ rows }) => rows.some((r) => r.rate != null))) {
      await Deno.writeTextFile(`${chartDir}${chart}`, svgChart(`${file} — ${adapter}`, list));
      sections.push(`![${file}](results/${chart})`);
    }
    for (const { group, rows } of list) {
      sections.push(formatTable(group, rows));
      for (const r of rows) {
        if (r.vsMoongrad != null) headline.push({ lib: r.lib, ratio: r.vsMoongrad });
      }
    }
  }
  const ratios = (lib: string) => {
    const xs = headline.filter((h) => h.lib === lib).map((h) => h.ratio);
    if (!xs.length) return "not measured";
    const geo = Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);
    return `geometric mean ${geo.toFixed(2)}× over ${xs.length} groups (range ${
      Math.min(...xs).toFixed(2)
    }–${Math.max(...xs).toFixed(2)}×)`;
  };
  const profile = files.some((f) => /k2_bench\.(ts|js)$/.test(f)) ? await runProfile() : null;
  const body = [
    START,
    "",
    `## Generated by \`deno task ${TAG === "gpu" ? "bench:gpu" : "bench:report"}\``,
    "",
    `Adapter: ${adapter}. Date: ${date}. Deno ${Deno.version.deno}, ${Deno.build.target}, ` +
    `${navigator.hardwareConcurrency} logical CPUs, load average ${load} at the start ` +
    "(other processes share these CPUs: compare rows of one run, not runs). Command: " +
    "`deno task bench:report" + (targets.length ? ` ${targets.join(" ")}` : "") + "`.",
    "",
    "These are the tables the run printed (bench/harness.ts: one warm-up, then at least n",
    "iterations and 300 ms unless a case says otherwise; every iteration waits for GPU",
    'completion). "its time / moongrad\'s" above 1: moongrad is faster. The check compares each',
    "peer's output with moongrad's once.",
    "",
    `Headline, moongrad speed vs tfjs-webgpu: ${ratios("tfjs-webgpu")}; vs jax-js: ${
      ratios("jax-js")
    }.`,
    "",
    torchNote,
    ...(failed.length ? ["", `Failed bench files: ${failed.join(", ")}.`] : []),
    "",
    ...sections.flatMap((s) => [s, ""]),
    ...(profile ? ["### profile of one training step", "", profile, ""] : []),
    END,
  ].join("\n");
  let md = "";
  try {
    md = await Deno.readTextFile(resultsMd);
  } catch {
    md = "# Measured results\n";
  }
  const s = md.indexOf(START);
  const e = md.indexOf(END);
  md = s >= 0 && e > s
    ? md.slice(0, s) + body + md.slice(e + END.length)
    : md.trimEnd() + "\n\n" + body + "\n";
  await Deno.writeTextFile(resultsMd, md);
  // Keep `deno fmt --check` green: the generated tables are aligned by deno fmt itself.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "-q", resultsMd], cwd: root.pathname })
    .output();
  console.log(`wrote ${resultsMd} and the charts in ${chartDir}`);
  // On the lent GPU machine only what lands in $OUT comes back.
  const outDir = Deno.env.get("OUT");
  if (outDir) {
    await Deno.copyFile(resultsMd, `${outDir}/RESULTS.md`);
    for await (const e of Deno.readDir(chartDir)) {
      if (e.name.endsWith(`${TAG ? `-${TAG}` : ""}.svg`)) {
        await Deno.copyFile(`${chartDir}${e.name}`, `${outDir}/${e.name}`);
      }
    }
    console.log(`copied RESULTS.md and the charts to ${outDir}`);
  }
  console.log(`moongrad vs tfjs-webgpu: ${ratios("tfjs-webgpu")}`);
  console.log(`moongrad vs jax-js: ${ratios("jax-js")}`);
}
