/**
 * `deno task train` / `sample` / `report` end to end, in subprocesses with tiny sizes:
 * a short run writes metrics, a checkpoint and a report; a run stopped and resumed reproduces
 * the uninterrupted run's losses exactly; sample streams text from the checkpoint; every bad
 * input gives one `train: error:` line, exit code 2, and leaves existing files untouched.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "../cli/data.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TMP = await Deno.makeTempDir({ prefix: "moongrad-cli-" });
const TEXT = `${TMP}/text.txt`;
// ~6 KB of varied UTF-8 text (ASCII and multi-byte characters).
await Deno.writeTextFile(
  TEXT,
  Array.from(
    { length: 120 },
    (_, i) =>
      `line ${i}: the quick brown fox ${i % 7} jumps over ${
        ["the lazy dog", "ünïcödé", "λ-calculus", "日本語"][i % 4]
      }.`,
  ).join("\n"),
);
// Tiny sizes: every run is a few steps of 2 × 16 tokens (the Muon step dominates the time).
const SMALL = ["--data", TEXT, "--batch", "2", "--seq-len", "16", "--warmup", "1"];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(script: string, args: string[]): Promise<Result> {
  const env: Record<string, string> = {
    XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
  };
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `cli/${script}.ts`, ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function ok(r: Result): Result {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

interface Rec {
  step: number;
  loss?: number;
  val_loss?: number;
  max_logit?: number[];
  clipped_heads?: number[];
  expert_load?: number[][];
  tokens_per_s?: number;
}

async function metrics(dir: string): Promise<Rec[]> {
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Under `test:dawn` these tests would only rerun their CLI subprocesses, which use Deno's own
 * WebGPU (not Dawn): they run once, in the wgpu suite.
 */
const ONLY_WGPU_SUITE = Deno.env.get("MOONGRAD_SUITE") === "dawn";

const FULL = `${TMP}/full`;
const PART = `${TMP}/part`;

Deno.test({
  ignore: ONLY_WGPU_SUITE,
  name: "train: 3 steps write metrics.jsonl, a checkpoint and report.html",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = ok(
      await cli("train", [
        ...SMALL,
        "--steps",
        "3",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--out",
        FULL,
      ]),
    );
    assert.match(r.stdout, /step 0: validation loss/);
    assert.match(r.stdout, /done: 3\/3 steps/);
    assert.match(r.stdout, new RegExp(`report: ${FULL}/report.html`));
    const recs = await metrics(FULL);
    assert.deepEqual(recs.map((x) => x.step), [0, 1, 2, 3]);
    assert.ok(recs[0].val_loss! > 5 && recs[0].val_loss! < 6, "initial loss near ln 256");
    for (const x of recs.slice(1)) {
      assert.ok(Number.isFinite(x.loss));
      assert.equal(x.max_logit!.length, 4, "one max logit per layer");
      assert.equal(x.clipped_heads!.length, 4);
      assert.equal(x.expert_load!.length, 3, "three MoE layers (layer 0 is dense)");
      for (const load of x.expert_load!) {
        assert.equal(load.length, 8);
        assert.equal(load.reduce((a, b) => a + b, 0), 2 * 16 * 2, "B·T·top-k routed pairs");
      }
      assert.ok(x.tokens_per_s! > 0);
    }
    assert.ok(recs[2].val_loss !== undefined && recs[3].val_loss !== undefined);
    for (
      const f of [
        "model.safetensors",
        "config.json",
        "optimizer.safetensors",
        "trainer_state.json",
        "tokenizer.json", // the byte tokenizer, so the checkpoint is a complete HF model folder
      ]
    ) {
      assert.ok(await exists(`${FULL}/checkpoint/${f}`), f);
    }
    const cfg = JSON.parse(await Deno.readTextFile(`${FULL}/checkpoint/config.json`));
    assert.equal(cfg.model_type, "deepseek_v3");
    const state = JSON.parse(await Deno.readTextFile(`${FULL}/checkpoint/trainer_state.json`));
    assert.equal(state.step, 3);
    // The SHA-256 of the training text goes into run.json and the checkpoint's state.
    const sha256 = await sha256Hex(await Deno.readFile(TEXT));
    assert.equal(state.dataSha256, sha256);
    const run = JSON.parse(await Deno.readTextFile(`${FULL}/run.json`));
    assert.equal(run.corpus.sha256, sha256);
    assert.equal(run.corpus.source, `--data ${TEXT}`);
    const html = await Deno.readTextFile(`${FULL}/report.html`);
    for (const s of ["<svg", "Loss", "Max attention logit", "τ = 100", "Expert load", "clipped"]) {
      assert.ok(html.includes(s), `report mentions ${s}`);
    }
    assert.ok(
      !/<script|https?:\/\/(?!www\.w3\.org)/.test(html),
      "self-contained: no scripts or links",
    );
  },
});

Deno.test({
  ignore: ONLY_WGPU_SUITE,
  name: "train: a run stopped at step 2 and resumed reproduces the uninterrupted losses exactly",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const a = ok(
      await cli("train", [
        ...SMALL,
        "--steps",
        "3",
        "--eval-every",
        "2",
        "--stop-at",
        "2",
        "--out",
        PART,
      ]),
    );
    assert.match(a.stdout, /stopped: 2\/3 steps/);
    assert.match(a.stdout, /--resume/);
    const b = ok(await cli("train", ["--resume", PART]));
    assert.match(b.stdout, /resuming .* at step 2/);
    const full = await metrics(FULL);
    const part = await metrics(PART);
    assert.deepEqual(part.map((x) => x.step), [0, 1, 2, 3]);
    for (let i = 0; i < full.length; i++) {
      // Bit-exact: same batches, same RNG, same optimizer state, same kernels.
      assert.equal(part[i].loss, full[i].loss, `loss at step ${full[i].step}`);
      assert.equal(part[i].val_loss, full[i].val_loss, `val loss at step ${full[i].step}`);
      assert.deepEqual(part[i].max_logit, full[i].max_logit);
      assert.deepEqual(part[i].expert_load, full[i].expert_load);
    }
    const r = ok(await cli("report", [PART]));
    assert.match(r.stdout, /report: .*report\.html/);
  },
});

Deno.test({
  ignore: ONLY_WGPU_SUITE,
  name: "sample: streams generated text from the checkpoint (same seed, same text)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const args = ["--run", FULL, "--prompt", "line", "--max-tokens", "6", "--seed", "3"];
    const r = ok(await cli("sample", args));
    assert.ok(r.stdout.startsWith("line"), r.stdout);
    assert.ok(new TextEncoder().encode(r.stdout).length > 4, "generated bytes follow the prompt");
    assert.match(r.stderr, /6 tokens in/);
    assert.equal(ok(await cli("sample", args)).stdout, r.stdout, "seeded sampling repeats");
    const bad = await cli("sample", ["--run", `${TMP}/nope`]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^sample: error: --run .*no such directory\n$/);
  },
});

Deno.test({
  ignore: ONLY_WGPU_SUITE,
  name: "train: each bad input is one error line, exit code 2, nothing created or overwritten",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await Deno.writeTextFile(`${TMP}/empty.txt`, "");
    await Deno.writeTextFile(`${TMP}/short.txt`, "too short");
    await Deno.writeFile(`${TMP}/binary.txt`, Uint8Array.from([104, 105, 0xff, 0xfe, 10]));
    const before = await Deno.readTextFile(`${FULL}/metrics.jsonl`);
    const fresh = `${TMP}/never`;
    const cases: [string[], RegExp][] = [
      [["--data", `${TMP}/missing.txt`], /--data .*missing\.txt: no such file/],
      [["--data", `${TMP}/empty.txt`], /--data .*empty\.txt is empty/],
      [["--data", `${TMP}/short.txt`], /too short: 9 bytes, but --seq-len 64 needs at least 130/],
      [["--data", `${TMP}/binary.txt`], /not UTF-8 text: invalid byte 0xff at offset 2/],
      [["--bogus"], /unknown option --bogus/],
      [["--steps", "abc"], /--steps must be an integer, got "abc"/],
      [["--steps", "0"], /--steps must be an integer >= 1, got 0/],
      [["--lr", "-1"], /--lr must be > 0, got -1/],
      [["--lr", "1e"], /--lr must be a number, got "1e"/],
      [["--optimizer", "sgd"], /--optimizer must be one of muonclip, muon, adamw/],
      [["--resume", FULL, "--batch", "3"], /was trained with --batch 2, not 3/],
      [
        ["--resume", FULL, "--data", TEXT, "--seq-len", "32"],
        /was trained with --seq-len 16, not 32/,
      ],
      [["--resume", `${TMP}/missing-run`], /--resume .*: no such directory/],
      [["--resume", FULL], /already finished all 3 steps/],
      [[...SMALL, "--out", FULL], /already holds a run; continue it with --resume/],
    ];
    for (const [args, re] of cases) {
      const withOut = args.includes("--out") || args.includes("--resume")
        ? args
        : [...args, "--out", fresh];
      const r = await cli("train", withOut);
      assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}\n${r.stderr}${r.stdout}`);
      assert.match(
        r.stderr,
        /^train: error: [^\n]+\n$/,
        `one line for ${args.join(" ")}: ${r.stderr}`,
      );
      assert.match(r.stderr, re);
      assert.equal(r.stdout, "", "nothing printed to stdout");
    }
    assert.ok(!(await exists(fresh)), "no output directory was created");
    assert.equal(
      await Deno.readTextFile(`${FULL}/metrics.jsonl`),
      before,
      "the existing run is untouched",
    );
    const help = ok(await cli("train", ["--help"]));
    for (
      const f of [
        "--steps",
        "--batch",
        "--seq-len",
        "--optimizer",
        "--lr",
        "--tau",
        "--resume",
        "--data",
        "--tokenizer",
      ]
    ) {
      assert.ok(help.stdout.includes(f), `--help documents ${f}`);
    }
  },
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(TMP, { recursive: true });
  } catch { /* ignore */ }
});
