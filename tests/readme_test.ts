/**
 * Every TypeScript block of README.md runs as written: each is saved as a program in a scratch
 * directory that mirrors the repository (its top-level entries linked in, so `./mod.ts`,
 * `README.md` and `tests/fixtures/` resolve as from the root, while files a block writes stay
 * out of the checkout) and run with the permissions the README tells users to use.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const PERMISSIONS = ["--allow-read", "--allow-write", "--allow-env", "--allow-sys"];

function typescriptBlocks(markdown: string): { line: number; code: string }[] {
  const out: { line: number; code: string }[] = [];
  const re = /^```ts\n([\s\S]*?)^```$/gm;
  for (const m of markdown.matchAll(re)) {
    out.push({ line: markdown.slice(0, m.index).split("\n").length, code: m[1] });
  }
  return out;
}

async function mirror(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "moongrad-readme-" });
  for await (const e of Deno.readDir(ROOT)) {
    if (e.name.startsWith(".") || e.name === "node_modules") continue;
    await Deno.symlink(new URL(e.name, ROOT).pathname, `${dir}/${e.name}`);
  }
  return dir;
}

const readme = await Deno.readTextFile(new URL("README.md", ROOT));
const blocks = typescriptBlocks(readme);

Deno.test("README.md has TypeScript examples", () => {
  assert.ok(blocks.length >= 3, `found ${blocks.length} blocks`);
});

for (const { line, code } of blocks) {
  Deno.test(`README.md block at line ${line} runs as written`, async () => {
    const dir = await mirror();
    try {
      await Deno.writeTextFile(`${dir}/app.ts`, code);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", ...PERMISSIONS, "app.ts"],
        cwd: dir,
        env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `README.md:${line} failed:\n${text}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
