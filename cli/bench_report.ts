/**
 * `deno task bench:report [bench files...]`: runs the bench suite (`deno bench --json`), then
 * writes a generated section of bench/RESULTS.md (between the markers below; everything else
 * in the file is kept) with the adapter, date, Deno version, one table per group (time,
 * throughput, moongrad's speed relative to each peer) and one SVG bar chart per bench file in
 * bench/results/. Throughput comes from the work each case declares (bench/harness.ts writes
 * it to the MG_BENCH_META file) divided by Deno.bench's average time.
 *
 * With OUT set (the GPU machine's output folder), RESULTS.md and the charts are copied there.
 * Set MG_BENCH_RESULTS to write elsewhere than bench/RESULTS.md, and MG_BENCH_TAG (e.g. "gpu")
 * to keep a second generated section (own markers, charts named `<file>-<tag>.svg`).
 */
const TAG = Deno.env.get("MG_BENCH_TAG") ?? "";
const START = `<!-- bench:report start${TAG ? ` ${TAG}` : ""} -->`;
const END = `<!-- bench:report end${TAG ? ` ${TAG}` : ""} -->`;
const root = new URL("../", import.meta.url);
const resultsMd = Deno.env.get("MG_BENCH_RESULTS") ?? new URL("bench/RESULTS.md", root).pathname;
const chartDir = new URL("bench/results/", root).pathname;

interface Meta {
  group: string;
  lib: string;
  flops?: number;
  bytes?: number;
  loopMs?: number;
  check?: string;
  skipped?: string;
}

interface BenchJson {
  runtime: string;
  cpu: string;
  benches: {
    origin: string;
    group: string | null;
    name: string;
    baseline: boolean;
    results: { ok?: { n: number; avg: number; min: number; max: number }; failed?: unknown }[];
  }[];
}

interface Row {
  lib: string;
  ms: number | null;
  meta: Meta | undefined;
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

async function runSuite(files: string[]): Promise<{ json: BenchJson; meta: Meta[] }> {
  const metaPath = await Deno.makeTempFile({ prefix: "mg-bench-meta-", suffix: ".jsonl" });
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "bench",
      "--json",
      // The bundles under .gpu/ are excluded by deno.json: run them without the config.
      // The peers are checked against deno.lock (deno.json itself turns the lockfile off).
      ...(files.some((f) => f.startsWith(".gpu") || f.includes("/.gpu/"))
        ? ["--no-config", "--no-check"]
        : ["--lock=deno.lock"]),
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      `--allow-write=${metaPath}`,
      ...(files.length ? files : ["bench/"]),
    ],
    cwd: root.pathname,
    env: { MG_BENCH_META: metaPath },
    stdout: "piped",
    stderr: "inherit",
  });
  const out = await cmd.output();
  const text = new TextDecoder().decode(out.stdout);
  const at = text.search(/^\{$/m);
  if (at < 0) throw new Error(`deno bench printed no JSON (exit ${out.code}):\n${text}`);
  // The lines before the JSON are the suite's own throughput lines: echo them.
  console.log(text.slice(0, at).trimEnd());
  const json = JSON.parse(text.slice(at)) as BenchJson;
  const meta = (await Deno.readTextFile(metaPath)).split("\n").filter((l) => l.trim()).map((l) =>
    JSON.parse(l) as Meta
  );
  await Deno.remove(metaPath);
  if (out.code !== 0) console.error(`deno bench exited with ${out.code}; reporting what ran`);
  return { json, meta };
}

function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 3 : 1)} ms`;
}

function rate(m: Meta | undefined, ms: number): { value: number; unit: string } | null {
  if (!m) return null;
  if (m.flops) return { value: m.flops / ms / 1e6, unit: "GFLOP/s" };
  if (m.bytes) return { value: m.bytes / ms / 1e6, unit: "GB/s" };
  return null;
}

function table(group: string, rows: Row[], skipped: Meta[]): string {
  const base = rows.find((r) => r.lib === "moongrad")?.ms ?? null;
  const lines = [
    `**${group}**`,
    "",
    "| library | time/iter (avg) | throughput | moongrad speed vs this | check |",
    "| ------- | --------------- | ---------- | ---------------------- | ----- |",
  ];
  for (const r of rows) {
    if (r.ms === null) continue;
    const t = rate(r.meta, r.ms);
    const vs = r.lib === "moongrad" || base === null ? "—" : `${(r.ms / base).toFixed(2)}×`;
    lines.push(
      `| ${r.lib} | ${fmtMs(r.ms)} | ${t ? `${t.value.toFixed(2)} ${t.unit}` : "—"} | ${vs} | ${
        r.meta?.check || "—"
      } |`,
    );
  }
  for (const s of skipped) lines.push(`| ${s.lib} | skipped: ${s.skipped} | | | |`);
  return lines.join("\n");
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Horizontal grouped bars of throughput, one block per group, one bar per library. */
function svgChart(title: string, groups: { group: string; rows: Row[] }[]): string {
  const bars: { group: string; lib: string; value: number; unit: string }[] = [];
  for (const g of groups) {
    for (const r of g.rows) {
      const t = r.ms === null ? null : rate(r.meta, r.ms);
      if (t) bars.push({ group: g.group, lib: r.lib, value: t.value, unit: t.unit });
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
  const files = Deno.args;
  const adapter = await adapterName();
  const { json, meta } = await runSuite(files);
  const date = new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const byFile = new Map<string, Map<string, Row[]>>();
  for (const b of json.benches) {
    const file = b.origin.split("/").pop()!.replace(/\.(ts|js)$/, "");
    const group = b.group ?? b.name;
    const ok = b.results[0]?.ok;
    const groups = byFile.get(file) ?? new Map<string, Row[]>();
    byFile.set(file, groups);
    const rows = groups.get(group) ?? [];
    groups.set(group, rows);
    rows.push({
      lib: b.name,
      ms: ok ? ok.avg / 1e6 : null,
      meta: meta.find((m) => m.group === group && m.lib === b.name && !m.skipped),
    });
  }
  await Deno.mkdir(chartDir, { recursive: true });
  const sections: string[] = [];
  const headline: string[] = [];
  for (const [file, groups] of byFile) {
    const list = [...groups].map(([group, rows]) => ({ group, rows }));
    const chart = `${file}${TAG ? `-${TAG}` : ""}.svg`;
    sections.push(`### ${file}`);
    // A chart only where some case declared its work (throughput is what the bars show).
    if (list.some(({ rows }) => rows.some((r) => r.meta && r.ms !== null))) {
      await Deno.writeTextFile(`${chartDir}${chart}`, svgChart(`${file} — ${adapter}`, list));
      sections.push(`![${file}](results/${chart})`);
    }
    for (const { group, rows } of list) {
      const skipped = meta.filter((m) => m.group === group && m.skipped);
      sections.push(table(group, rows, skipped));
      const base = rows.find((r) => r.lib === "moongrad")?.ms;
      for (const r of rows) {
        if (r.lib !== "moongrad" && base && r.ms) {
          headline.push(`${group}: ${(r.ms / base).toFixed(2)}× vs ${r.lib}`);
        }
      }
    }
  }
  const ratios = (lib: string) => {
    const xs = headline.filter((h) => h.endsWith(lib)).map((h) => parseFloat(h.split(": ")[1]));
    if (!xs.length) return "not measured";
    const geo = Math.exp(xs.reduce((a, x) => a + Math.log(x), 0) / xs.length);
    return `geometric mean ${geo.toFixed(2)}× over ${xs.length} groups (range ${
      Math.min(...xs).toFixed(2)
    }–${Math.max(...xs).toFixed(2)}×)`;
  };
  const body = [
    START,
    "",
    `## Generated by \`deno task ${TAG === "gpu" ? "bench:gpu" : "bench:report"}\``,
    "",
    `Adapter: ${adapter}. Date: ${date}. ${json.runtime}, CPU ${json.cpu}. Command: ` +
    "`deno task bench:report" + (files.length ? ` ${files.join(" ")}` : "") + "`.",
    "",
    "Time is Deno.bench's average per iteration; every iteration waits for GPU completion.",
    "\"moongrad speed vs this\" = this library's time / moongrad's time (above 1: moongrad is",
    "faster). The check compares each peer's output with moongrad's once.",
    "",
    `Headline, moongrad speed vs tfjs-webgpu: ${ratios("tfjs-webgpu")}; vs jax-js: ${
      ratios("jax-js")
    }.`,
    "",
    ...sections.flatMap((s) => [s, ""]),
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
