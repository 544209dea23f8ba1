/**
 * bench/harness.ts: the table a group prints and the JSON lines it records (the rows
 * cli/bench_report.ts turns into bench/RESULTS.md) carry the same numbers from the same
 * measurement. A tiny JS-only case (no GPU, no peer packages): moongrad and a "peer" summing
 * an array, a peer whose output differs (the check must say so) and one that fails to prepare.
 */
import assert from "node:assert/strict";
import {
  benchCase,
  type BenchResult,
  type Case,
  fmtMs,
  noteToMetaFile,
  TABLE_HEADER,
} from "../bench/harness.ts";

function sumCase(): Case {
  const xs = Float64Array.from({ length: 20000 }, (_, i) => Math.sin(i));
  const sum = (scale: number) => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[i] * scale;
    return s;
  };
  const impl = (lib: string, scale: number) => ({
    lib,
    prepare: () => {
      let out = 0;
      return Promise.resolve({
        run: () => {
          out = sum(scale);
          return Promise.resolve();
        },
        result: () => Promise.resolve([out]),
      });
    },
  });
  return {
    group: "sum f64 20000",
    work: { flops: 2 * xs.length },
    n: 4,
    minMs: 20,
    impls: [
      impl("moongrad", 1),
      impl("js-peer", 1),
      impl("wrong-peer", 1.5),
      { lib: "absent-peer", prepare: () => Promise.resolve("not installed here") },
    ],
  };
}

/** The body rows of a printed Markdown table, split into trimmed cells. */
function parseTable(text: string): string[][] {
  const lines = text.trim().split("\n");
  assert.equal(lines[0], "**sum f64 20000**");
  const rows = lines.filter((l) => l.startsWith("|")).map((l) =>
    l.slice(1, -1).split("|").map((c) => c.trim())
  );
  assert.deepEqual(rows[0], [...TABLE_HEADER]);
  assert.match(rows[1][0], /^-+$/);
  return rows.slice(2);
}

Deno.test("bench harness: printed table and recorded JSON lines carry identical numbers", async () => {
  const meta = await Deno.makeTempFile({ suffix: ".jsonl" });
  const before = Deno.env.get("MG_BENCH_META");
  Deno.env.set("MG_BENCH_META", meta);
  const printed: string[] = [];
  let returned: BenchResult[];
  try {
    returned = await benchCase(sumCase(), { log: (l) => printed.push(l), note: noteToMetaFile });
  } finally {
    if (before === undefined) Deno.env.delete("MG_BENCH_META");
    else Deno.env.set("MG_BENCH_META", before);
  }
  const recorded = (await Deno.readTextFile(meta)).trim().split("\n").map((l) =>
    JSON.parse(l) as BenchResult
  );
  await Deno.remove(meta);
  assert.equal(printed.length, 1, "one table per group, nothing else");
  assert.deepEqual(recorded, JSON.parse(JSON.stringify(returned)));
  const table = parseTable(printed[0]);
  assert.deepEqual(table.map((r) => r[0]), ["moongrad", "js-peer", "wrong-peer", "absent-peer"]);
  assert.deepEqual(recorded.map((r) => r.lib), table.map((r) => r[0]));

  const base = recorded[0];
  for (const [i, r] of recorded.slice(0, 3).entries()) {
    const cells = table[i];
    assert.ok(r.ms !== null && r.minMs !== undefined && r.maxMs !== undefined);
    assert.ok(r.iters! >= 4, `${r.lib}: ${r.iters} iterations, asked for at least 4`);
    assert.ok(r.minMs <= r.ms && r.ms <= r.maxMs, `${r.lib}: mean outside min–max`);
    // The printed time, range, throughput and ratio are the recorded numbers, formatted.
    assert.equal(cells[1], fmtMs(r.ms));
    assert.equal(cells[2], `${fmtMs(r.minMs)} – ${fmtMs(r.maxMs)} (${r.iters})`);
    assert.equal(r.unit, "GFLOP/s");
    assert.ok(Math.abs(r.rate! - 40000 / r.ms / 1e6) <= 1e-12 * r.rate!);
    assert.equal(parseFloat(cells[3]), Number(r.rate!.toFixed(2)));
    assert.match(cells[3], / GFLOP\/s$/);
    if (i === 0) {
      assert.equal(r.vsMoongrad, null);
      assert.equal(cells[4], "—");
    } else {
      assert.ok(Math.abs(r.vsMoongrad! - r.ms / base.ms!) <= 1e-12 * r.vsMoongrad!);
      assert.equal(cells[4], `${r.vsMoongrad!.toFixed(2)}×`);
    }
  }
  assert.match(table[1][5], /^matches moongrad \(rel err 0\.0e\+0\)$/);
  assert.match(table[2][5], /^MISMATCH vs moongrad \(rel err 5\.0e-1\)$/);
  assert.equal(recorded[2].check, table[2][5]);
  assert.equal(recorded[3].ms, null);
  assert.equal(recorded[3].skipped, "not installed here");
  assert.equal(table[3][1], "skipped: not installed here");
});

Deno.test("bench harness: a peer that times itself (numpy in a subprocess) is recorded at its own time", async () => {
  const own = [5, 7, 6, 9];
  let i = 0;
  const rows = await benchCase({
    group: "self-timed",
    work: { flops: 1e6 },
    n: 4,
    minMs: 0,
    impls: [
      { lib: "moongrad", prepare: () => Promise.resolve({ run: () => Promise.resolve() }) },
      {
        lib: "numpy",
        // The warm-up consumes no entry: it is not timed; then 5, 7, 6, 9 ms.
        prepare: () => Promise.resolve({ run: () => Promise.resolve(i++ === 0 ? 0 : own[i - 2]) }),
      },
    ],
  }, { log: () => {}, note: () => {} });
  const np = rows[1];
  assert.equal(np.iters, 4);
  assert.equal(np.minMs, 5);
  assert.equal(np.maxMs, 9);
  assert.equal(np.ms, 27 / 4);
});
