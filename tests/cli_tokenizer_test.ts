/**
 * `deno task tokenizer` and `deno task train --tokenizer DIR` / `sample` end to end, in
 * subprocesses with tiny sizes: the trained tokenizer.json sets the model's vocab_size, is
 * saved beside the checkpoint, survives a stop and resume with the same losses, and encodes
 * the sampler's prompt; bad input is one error line with exit code 2.
 */
import assert from "node:assert/strict";
import { Tokenizer } from "../tokenizer/mod.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TMP = await Deno.makeTempDir({ prefix: "moongrad-cli-tok-" });
const TEXT = `${TMP}/text.txt`;
await Deno.writeTextFile(
  TEXT,
  Array.from(
    { length: 150 },
    (_, i) =>
      `export function f${i % 9}(x: number): number { return x * ${i % 5} + ${
        ["alpha", "ünïcödé", "λ", "日本語"][i % 4].length
      }; } // <|endoftext|> is text here`,
  ).join("\n"),
);
const TOK = `${TMP}/tok`;
const SMALL = ["--data", TEXT, "--batch", "2", "--seq-len", "16", "--warmup", "1"];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(script: string, args: string[]): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `cli/${script}.ts`, ...args],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
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

async function losses(dir: string): Promise<(number | undefined)[][]> {
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
  return text.trim().split("\n").map((l) => JSON.parse(l)).map((r) => [r.loss, r.val_loss]);
}

Deno.test("tokenizer: trains on a file and writes tokenizer.json; bad input is one line", async () => {
  const r = ok(await cli("tokenizer", ["--train", TEXT, "--vocab", "300", "--out", TOK]));
  assert.match(r.stdout, /trained byte-level BPE, 300 tokens \(43 merges\)/);
  assert.match(r.stdout, /bytes per token/);
  const tok = await Tokenizer.load(TOK);
  assert.equal(tok.vocabSize, 300);
  assert.equal(tok.tokenToId("<|endoftext|>"), 299, "the default special token, last");
  for (
    const [args, re] of [
      [["--vocab", "300"], /missing --out DIR/],
      [["--train", `${TMP}/missing.txt`, "--out", `${TMP}/x`], /--train .*missing\.txt: no such/],
      [["--vocab", "12", "--out", `${TMP}/x`], /--vocab must be an integer >= 257/],
      [["--pattern", "\\p{L}++", "--out", `${TMP}/x`], /possessive quantifier/],
    ] as [string[], RegExp][]
  ) {
    const bad = await cli("tokenizer", ["--train", TEXT, ...args]);
    assert.equal(bad.code, 2, `${args.join(" ")}: ${bad.stderr}`);
    assert.match(bad.stderr, /^tokenizer: error: [^\n]+\n$/);
    assert.match(bad.stderr, re);
  }
});

Deno.test({
  name: "train --tokenizer: vocab_size follows it, the checkpoint carries it, resume and sample",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const full = `${TMP}/full`, part = `${TMP}/part`;
    const args = [...SMALL, "--tokenizer", TOK, "--steps", "3", "--eval-every", "2"];
    const r = ok(await cli("train", [...args, "--out", full]));
    assert.match(r.stdout, /tokens \(byte-level BPE, 300 tokens/);
    assert.match(r.stdout, /uniform guess: ln 300 = 5\.704/);
    assert.match(r.stdout, /bits\/byte/);
    const cfg = JSON.parse(await Deno.readTextFile(`${full}/checkpoint/config.json`));
    assert.equal(cfg.vocab_size, 300);
    assert.equal(
      await Deno.readTextFile(`${full}/checkpoint/tokenizer.json`),
      await Deno.readTextFile(`${TOK}/tokenizer.json`),
      "the run keeps the tokenizer it trained with",
    );
    const info = JSON.parse(await Deno.readTextFile(`${full}/run.json`));
    assert.equal(info.tokenizer.vocabSize, 300);
    assert.ok(info.tokenizer.valBytesPerToken > 1.5, "BPE tokens hold several bytes");
    const first = (await losses(full))[0][1]!;
    assert.ok(Math.abs(first - Math.log(300)) < 0.5, `initial loss ${first} near ln 300`);

    // Stopped at step 2 and resumed: the tokenizer comes from the checkpoint; same losses.
    ok(await cli("train", [...args, "--stop-at", "2", "--out", part]));
    await Deno.remove(TOK, { recursive: true }); // the original is not needed to resume
    ok(await cli("train", ["--resume", part]));
    assert.deepEqual(await losses(part), await losses(full));

    const s = ok(
      await cli("sample", ["--run", full, "--prompt", "export function", "--max-tokens", "5"]),
    );
    assert.ok(s.stdout.startsWith("export function"), s.stdout);
    assert.match(s.stderr, /5 tokens in/);
  },
});

Deno.test("train --tokenizer: a missing or invalid tokenizer is one error line", async () => {
  await Deno.writeTextFile(`${TMP}/broken.json`, '{"model": {"type": "WordPiece"}}');
  for (
    const [spec, re] of [
      [`${TMP}/nope`, /--tokenizer .*nope: no such file or directory/],
      [`${TMP}/broken.json`, /--tokenizer .*broken\.json: tokenizer\.json: model type "WordPiece"/],
    ] as [string, RegExp][]
  ) {
    const r = await cli("train", [...SMALL, "--tokenizer", spec, "--out", `${TMP}/never`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^train: error: [^\n]+\n$/);
    assert.match(r.stderr, re);
  }
  assert.ok(!(await Deno.stat(`${TMP}/never`).then(() => true, () => false)));
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(TMP, { recursive: true });
  } catch { /* ignore */ }
});
