/**
 * Every failure of `train`, `sample`, `demo` and `report` is one line on stderr with exit code
 * 2 (bad input: flags, files, directories, checkpoints) or 1 (the run failed: here, no WebGPU
 * adapter, provoked with DENO_WEBGPU_BACKEND=dx12, which Linux does not have), never a stack
 * trace, and prints nothing on stdout. Most cases fail before the GPU is touched (< 1 s each).
 */
import assert from "node:assert/strict";
import { makeConfig } from "../../nn/config.ts";
import { toHfConfig } from "../../nn/hf_config.ts";
import { cli, exists } from "./cli.ts";

const TMP = await Deno.makeTempDir({ prefix: "moongrad-cli-errors-" });
const FILE = `${TMP}/a-file.txt`;
await Deno.writeTextFile(FILE, "not a directory\n");
const EMPTY = `${TMP}/empty-dir`;
await Deno.mkdir(EMPTY);
const MISSING = `${TMP}/missing`;
const FRESH = `${TMP}/never-created`;

// A checkpoint folder with a valid config and broken weights / config, for sample.
const BAD_WEIGHTS = `${TMP}/bad-weights`;
await Deno.mkdir(BAD_WEIGHTS);
await Deno.writeTextFile(
  `${BAD_WEIGHTS}/config.json`,
  JSON.stringify(toHfConfig(makeConfig("tiny"))),
);
await Deno.writeFile(`${BAD_WEIGHTS}/model.safetensors`, new Uint8Array(64).fill(7));
const BAD_CONFIG = `${TMP}/bad-config`;
await Deno.mkdir(BAD_CONFIG);
await Deno.writeTextFile(`${BAD_CONFIG}/config.json`, "{ nope");
await Deno.writeFile(`${BAD_CONFIG}/model.safetensors`, new Uint8Array(64));

// Run directories for report: bad run.json; a bad metrics line.
const BAD_RUN = `${TMP}/bad-run`;
await Deno.mkdir(BAD_RUN);
await Deno.writeTextFile(`${BAD_RUN}/run.json`, "{");
const BAD_METRICS = `${TMP}/bad-metrics`;
await Deno.mkdir(BAD_METRICS);
await Deno.writeTextFile(`${BAD_METRICS}/run.json`, "{}");
await Deno.writeTextFile(`${BAD_METRICS}/metrics.jsonl`, '{"step":0}\nnot json\n{"step":1}\n');

const NO_ADAPTER = { DENO_WEBGPU_BACKEND: "dx12" };

type Case = [script: string, args: string[], code: 1 | 2, message: RegExp, env?: object];

const CASES: Case[] = [
  ["train", ["--bogus"], 2, /unknown option --bogus/],
  ["train", ["--steps", "0", "--out", FRESH], 2, /--steps must be an integer >= 1, got 0/],
  ["train", ["--out", FILE], 2, /--out .*a-file\.txt is a file, not a directory/],
  ["train", ["--out", `${FILE}/run`], 2, /--out .* cannot be created: .*a-file\.txt is a file/],
  ["train", ["--resume", FILE], 2, /--resume .*a-file\.txt is a file, not a directory/],
  ["train", ["--resume", MISSING], 2, /--resume .*missing: no such directory/],
  ["train", ["--resume", EMPTY], 2, /--resume .*empty-dir: no checkpoint there/],
  ["train", ["--data", `${TMP}/nope.txt`, "--out", FRESH], 2, /--data .*nope\.txt: no such file/],
  [
    "train",
    ["--steps", "1", "--out", FRESH],
    1,
    /^train: failed: .*no WebGPU adapter found/,
    NO_ADAPTER,
  ],
  ["sample", [], 2, /missing --run RUN_DIR/],
  ["sample", ["--run", MISSING], 2, /--run .*missing: no such directory/],
  ["sample", ["--run", EMPTY], 2, /--run .*empty-dir: no checkpoint there/],
  ["sample", ["--run", BAD_WEIGHTS, "--top-k", "x"], 2, /--top-k must be an integer, got "x"/],
  ["sample", ["--run", BAD_CONFIG], 2, /config\.json is not a usable model config/],
  [
    "sample",
    ["--run", BAD_WEIGHTS, "--max-tokens", "2"],
    2,
    /model\.safetensors .*(invalid|corrupt|header|short|truncat)/i,
  ],
  [
    "sample",
    ["--run", BAD_WEIGHTS, "--max-tokens", "2"],
    1,
    /^sample: failed: .*no WebGPU adapter found/,
    NO_ADAPTER,
  ],
  ["report", [], 2, /missing RUN_DIR/],
  ["report", [MISSING], 2, /is not a training run directory \(no run\.json\)/],
  ["report", [BAD_RUN], 2, /run\.json is not valid JSON/],
  ["report", [BAD_METRICS], 2, /metrics\.jsonl:2 is not valid JSON/],
  ["report", ["a", "b"], 2, /unexpected argument "b"/],
  ["demo", ["abc"], 2, /SIZE must be an integer from 1 to 8192, got "abc"/],
  ["demo", ["--bogus"], 2, /unknown option --bogus/],
  ["demo", [], 1, /^demo: failed: .*no WebGPU adapter found.*mesa-vulkan-drivers/, NO_ADAPTER],
];

Deno.test({
  name:
    "reliability: every bad invocation of train/sample/demo/report: one line, exit 2 or 1, no stack",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const failures: string[] = [];
    for (const [script, args, code, re, env] of CASES) {
      const what = `${script} ${args.join(" ")}${env ? " (no adapter)" : ""}`;
      const r = await cli(script, args, (env ?? {}) as Record<string, string>);
      const problems = [
        r.code !== code && `exit ${r.code}, expected ${code}`,
        !new RegExp(`^${script}: (error|failed): [^\\n]+\\n$`).test(r.stderr) && "not one line",
        / {4}at /.test(r.stderr) && "a stack trace",
        !re.test(r.stderr) && `stderr does not match ${re}`,
        r.stdout !== "" && "printed to stdout",
      ].filter(Boolean);
      if (problems.length) {
        failures.push(
          `${what}: ${problems.join("; ")}\n  stderr: ${r.stderr}  stdout: ${r.stdout}`,
        );
      }
    }
    assert.deepEqual(failures, [], failures.join("\n"));
    assert.ok(!(await exists(FRESH)), "a failed run created its output directory");
    assert.equal(await Deno.readTextFile(FILE), "not a directory\n");
  },
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(TMP, { recursive: true });
  } catch { /* ignore */ }
});
