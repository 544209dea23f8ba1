/**
 * The default training text is a fixed, named file: its bytes match the SHA-256 that
 * cli/data.ts pins, its header says what it is and under which terms it is distributed, a
 * modified copy is refused, and `deno task corpus` rebuilds it byte for byte from its commit.
 */
import assert from "node:assert/strict";
import { DEFAULT_CORPUS, firstInvalidUtf8, loadDefaultCorpus, sha256Hex } from "../cli/data.ts";
import { CliError } from "../cli/errors.ts";
import { snapshot } from "../cli/make_corpus.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("sha256Hex matches known SHA-256 digests", async () => {
  assert.equal(
    await sha256Hex(new Uint8Array()),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("the default corpus: pinned SHA-256, a header naming it and its licence, a few MB", async () => {
  const { bytes, sha256 } = await loadDefaultCorpus();
  assert.equal(sha256, DEFAULT_CORPUS.sha256);
  assert.equal(DEFAULT_CORPUS.path, `data/${DEFAULT_CORPUS.name}.txt`);
  assert.ok(bytes.length > 500_000 && bytes.length < 4_000_000, `${bytes.length} bytes`);
  assert.equal(firstInvalidUtf8(bytes), -1, "valid UTF-8");
  const header = new TextDecoder().decode(bytes.subarray(0, 2000));
  assert.ok(header.startsWith(`${DEFAULT_CORPUS.name}: the default training text`));
  assert.match(header, /\nLicence: moongrad's own source code and documentation/);
  assert.match(header, /repository at commit\n[0-9a-f]{40} /);
});

Deno.test("a modified or missing default corpus is a CliError that names the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "moongrad-corpus-" });
  try {
    const root = new URL(`file://${dir}/`);
    await assert.rejects(
      () => loadDefaultCorpus(root),
      (e) =>
        e instanceof CliError && e.message.includes(`${DEFAULT_CORPUS.path}`) &&
        /missing/.test(e.message),
    );
    const bytes = await Deno.readFile(new URL(DEFAULT_CORPUS.path, ROOT));
    bytes[bytes.length - 1] ^= 1;
    await Deno.mkdir(`${dir}/data`);
    await Deno.writeFile(`${dir}/${DEFAULT_CORPUS.path}`, bytes);
    await assert.rejects(
      () => loadDefaultCorpus(root),
      (e) =>
        e instanceof CliError && /was modified/.test(e.message) &&
        e.message.includes(DEFAULT_CORPUS.sha256),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The commit the default corpus was made from (in its header), if this clone has it. */
async function sourceCommit(): Promise<string | null> {
  const head = new TextDecoder().decode(
    (await Deno.readFile(new URL(DEFAULT_CORPUS.path, ROOT))).subarray(0, 2000),
  );
  const commit = /repository at commit\n([0-9a-f]{40}) /.exec(head)![1];
  const out = await new Deno.Command("git", {
    args: ["cat-file", "-e", `${commit}^{commit}`],
    cwd: ROOT,
    stdout: "null",
    stderr: "null",
  }).output().catch(() => null);
  return out?.success ? commit : null;
}

const commit = await sourceCommit();

Deno.test({
  name: "deno task corpus rebuilds the default corpus byte for byte from its commit",
  // A shallow clone (or a copy without .git) lacks the commit: nothing to rebuild from.
  ignore: commit === null,
  fn: async () => {
    const version = Number(/-v(\d+)$/.exec(DEFAULT_CORPUS.name)![1]);
    const { text } = await snapshot(commit!, version);
    assert.equal(await sha256Hex(text), DEFAULT_CORPUS.sha256);
  },
});
