/**
 * What a fresh machine downloads and prints: the library and the CLI entry points reach no
 * npm (or remote) module; `deno task demo` and `deno task train` run from an empty Deno
 * cache with the npm registry unreachable (so any attempt to fetch a package fails the run)
 * and with XDG_RUNTIME_DIR removed from the environment, and print no libwayland
 * `XDG_RUNTIME_DIR is invalid` line.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

/** The public entry points (deno.json "exports") and the CLIs a first-time user runs. */
const LIBRARY = ["mod.ts", "nn/mod.ts", "optim/mod.ts", "io/mod.ts", "tokenizer/mod.ts"];
const CLI = ["cli/train.ts", "cli/demo.ts", "cli/sample.ts"];

interface ModuleGraph {
  modules: { specifier: string }[];
  npmPackages: Record<string, unknown>;
}

async function moduleGraph(entry: string): Promise<ModuleGraph> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `deno info ${entry} failed:\n${dec.decode(out.stderr)}`);
  return JSON.parse(dec.decode(out.stdout)) as ModuleGraph;
}

for (const entry of [...LIBRARY, ...CLI]) {
  Deno.test(`module graph of ${entry}: local files only, no npm: package`, async () => {
    const g = await moduleGraph(entry);
    assert.deepEqual(Object.keys(g.npmPackages), [], `${entry} reaches npm packages`);
    // The library is dependency-free (relative imports only); the CLIs may use node: built-ins.
    const allowed = LIBRARY.includes(entry) ? /^file:/ : /^(file|node):/;
    const foreign = g.modules.map((m) => m.specifier).filter((s) => !allowed.test(s));
    assert.deepEqual(foreign, [], `${entry} imports modules that are not local files`);
    assert.ok(g.modules.length > 5, `deno info listed only ${g.modules.length} modules`);
  });
}

Deno.test("deno.json: no import map entry or lockfile that `deno task` would install first", async () => {
  // `deno task` installs every npm package of the configured lockfile and import map before it
  // runs any task (so that npm binaries exist): that fetched 70 packages for `deno task train`.
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  assert.equal(config.lock, false, "deno.json must keep `lock: false` (tasks pass --lock)");
  const npmImports = Object.entries(config.imports ?? {}).filter(([, v]) =>
    String(v).startsWith("npm:")
  );
  assert.deepEqual(npmImports, [], "npm: packages in deno.json imports are installed by deno task");
  assert.ok(
    !(await exists(`${ROOT}package.json`)),
    "a root package.json is installed by deno task",
  );
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Every file under `dir` (none when it does not exist); Deno creates an empty npm/ anyway. */
async function filesUnder(dir: string): Promise<string[]> {
  if (!(await exists(dir))) return [];
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await filesUnder(`${dir}/${e.name}`));
    else out.push(`${dir}/${e.name}`);
  }
  return out;
}

/** The environment of a first run: an empty DENO_DIR, no registry, no XDG_RUNTIME_DIR. */
function freshEnv(denoDir: string): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.XDG_RUNTIME_DIR;
  delete env.DENO_DIR;
  // Nothing listens on port 9 (discard): an npm download fails the run instead of succeeding.
  env.NPM_CONFIG_REGISTRY = "http://127.0.0.1:9/";
  env.DENO_DIR = denoDir;
  env.NO_COLOR = "1";
  return env;
}

async function freshTask(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const denoDir = await Deno.makeTempDir({ prefix: "moongrad-fresh-deno-dir-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", ...args],
      cwd: ROOT,
      clearEnv: true,
      env: freshEnv(denoDir),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const r = { stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    const what = `deno task ${args.join(" ")}`;
    assert.equal(out.code, 0, `${what} exited ${out.code}\n${r.stdout}\n${r.stderr}`);
    assert.deepEqual(await filesUnder(`${denoDir}/npm`), [], `${what} put npm files into DENO_DIR`);
    assert.doesNotMatch(r.stderr, /XDG_RUNTIME_DIR/, `${what} printed:\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Ignored build scripts|Download/, `${what}:\n${r.stderr}`);
    return r;
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
}

Deno.test({
  name: "deno task demo: fresh cache, no registry, XDG_RUNTIME_DIR unset: no download, quiet",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const r = await freshTask(["demo"]);
    assert.match(r.stdout, /^adapter: /m);
    assert.match(r.stdout, /\(ok\)/);
  },
});

Deno.test({
  name: "deno task train (1 tiny step): fresh cache, no registry, XDG_RUNTIME_DIR unset: quiet",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "moongrad-fresh-train-" });
    try {
      const r = await freshTask([
        "train",
        ...["--steps", "1", "--batch", "1", "--seq-len", "16", "--eval-batches", "1"],
        ...["--out", `${out}/run`],
      ]);
      assert.match(r.stdout, /done: 1\/1 steps/);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
