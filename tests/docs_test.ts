/**
 * The public API is documented: every symbol exported by an entry point of deno.json's
 * "exports" has a doc comment with at least one `@example`, read from `deno doc --json`; and
 * `deno doc --lint` passes over all the entry points together.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
const ENTRIES: Record<string, string> = typeof config.exports === "string"
  ? { ".": config.exports }
  : config.exports;

interface DocNode {
  name: string;
  declarations: {
    kind: string;
    location: { filename: string; line: number };
    jsDoc?: { doc?: string; tags?: { kind: string; doc?: string }[] };
  }[];
}

async function deno(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno.json exports the library and its four namespaces as entry points", () => {
  assert.deepEqual(Object.keys(ENTRIES).sort(), [".", "./io", "./nn", "./optim", "./tokenizer"]);
});

for (const [name, path] of Object.entries(ENTRIES)) {
  Deno.test(`every export of "${name}" (${path}) has a doc comment with an @example`, async () => {
    const r = await deno(["doc", "--json", path]);
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { nodes: Record<string, { symbols: DocNode[] }> };
    const symbols = Object.values(json.nodes).flatMap((n) => n.symbols);
    assert.ok(symbols.length > 10, `${path}: only ${symbols.length} symbols`);
    const missing: string[] = [];
    for (const s of symbols) {
      for (const d of s.declarations) {
        const doc = d.jsDoc?.doc?.trim() ?? "";
        const example = d.jsDoc?.tags?.find((t) => t.kind === "example" && /```/.test(t.doc ?? ""));
        if (!doc || !example) {
          const where = `${d.location.filename.replace(`file://${ROOT}`, "")}:${d.location.line}`;
          missing.push(`${s.name} (${d.kind}, ${where}): ${!doc ? "no doc" : "no @example"}`);
        }
      }
    }
    assert.deepEqual(missing, [], `${missing.length} exports lack docs or examples`);
  });
}

Deno.test("deno doc --lint passes over every entry point", async () => {
  const r = await deno(["doc", "--lint", ...Object.values(ENTRIES)]);
  assert.equal(r.code, 0, r.stderr);
});
