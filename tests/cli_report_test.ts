/**
 * report.html from a small fixture run (tests/fixtures/report_run: 12 steps, 2 layers × 2
 * heads, τ = 5, expert 3 of the MoE layer starved after step 4): the per-head logit charts
 * with τ, γ of clipped heads, gradient and update norms, the starved expert flagged, the run
 * record (command, seed, git commit), the sample text (escaped) and hover values.
 */
import assert from "node:assert/strict";
import { buildReport, starvedExperts, writeReport } from "../cli/report.ts";
import { readMetrics, readRunInfo } from "../cli/metrics.ts";
import { bandSeries, lineChart } from "../cli/svg.ts";

const FIXTURE = new URL("./fixtures/report_run/", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("report: renders per-head logits, γ, norms, starved experts, run record and sample", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const f of ["run.json", "metrics.jsonl", "sample.txt"]) {
      await Deno.copyFile(`${FIXTURE}/${f}`, `${dir}/${f}`);
    }
    const html = await Deno.readTextFile(await writeReport(dir));
    for (
      const title of [
        "Max attention logit per head, layer 0",
        "Max attention logit per head, layer 1",
        "QK-Clip factor γ = τ / max logit of each clipped head",
        "Gradient norm (global L2, before clipping), clipped to 1",
        "Update norm (global L2 of the step's parameter change)",
        "Dead or starved experts",
        "Sample of generated text",
      ]
    ) assert.ok(html.includes(title), `report has "${title}"`);
    // τ drawn on the per-head charts; head lines named.
    assert.match(html, /τ = 5/);
    assert.match(html, /head 1/);
    // Expert 3 of layer 1: 8 of 1160 routed pairs over the 12 steps (0.028 of uniform): flagged.
    assert.match(html, /<td>1<\/td><td>3<\/td><td>0\.0[0-9]+<\/td>/);
    // Run record.
    assert.ok(html.includes("deno task train --steps 12 --grad-accum 2 --grad-clip 1 --tau 5"));
    assert.ok(html.includes("0123456789abcdef0123456789abcdef01234567"));
    assert.match(html, /<th>seed<\/th><td>7<\/td>/);
    assert.match(html, /micro-batches per step<\/th><td>2</);
    // The sample is escaped.
    assert.ok(html.includes("export function &lt;fixture &amp; sample&gt;()"));
    // Hover values on line charts.
    assert.match(html, /<title>head 0: 1, 1\.1<\/title>/);
    assert.ok(!html.includes("<script"), "no scripts");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("report: starvedExperts flags dead and starved experts over the window only", async () => {
  const records = await readMetrics(`${FIXTURE}/metrics.jsonl`);
  const train = records.filter((r) => r.loss !== undefined);
  // Last 8 steps: expert 3 got nothing → dead.
  assert.deepEqual(starvedExperts(train, 1, 8), [{ layer: 1, expert: 3, share: 0 }]);
  // Whole run: 8 of 1160 routed pairs = 0.028 of uniform, still under 10 %.
  const all = starvedExperts(train, 1, 12);
  assert.equal(all.length, 1);
  assert.ok(Math.abs(all[0].share - (8 / 1160) * 4) < 1e-12, `share ${all[0].share}`);
  // At a 1 % threshold it is not flagged over the whole run, but is over the last 8 steps.
  assert.deepEqual(starvedExperts(train, 1, 12, 0.01), []);
  assert.equal(starvedExperts(train, 1, 8, 0.01).length, 1);
});

Deno.test("report: a balanced run says no expert is starved; missing sample and commit degrade", async () => {
  const info = await readRunInfo(FIXTURE);
  const records = (await readMetrics(`${FIXTURE}/metrics.jsonl`)).map((r) =>
    r.expert_load ? { ...r, expert_load: [[25, 25, 25, 25]] } : r
  );
  const html = buildReport({ ...info, gitCommit: undefined, command: undefined }, records);
  assert.match(html, /No dead or starved expert/);
  assert.match(html, /No sample yet/);
  assert.match(html, /unknown \(no git, or no permission to run it\)/);
  assert.match(html, /\(not recorded\)/);
});

Deno.test("svg: bandSeries draws the mean line and a min–max band polygon", () => {
  const [s] = bandSeries("runs", "#123456", [[1, 2, 3], [3, 4, 5]]);
  assert.deepEqual(s.points, [[1, 2], [2, 3], [3, 4]]);
  assert.deepEqual(s.band, [[1, 1, 3], [2, 2, 4], [3, 3, 5]]);
  const svg = lineChart({ title: "t", series: [s] });
  assert.match(svg, /<polygon points="[^"]+" fill="#123456" fill-opacity="0.18"/);
  assert.match(svg, /<title>runs: 2, 3 \(2–4\)<\/title>/);
});
