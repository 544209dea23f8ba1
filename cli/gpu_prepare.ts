/**
 * `deno task gpu:prepare`: makes `.gpu/` ready for the lent GPU machine (which has no package
 * registry): runs ../shared/gpu/prepare.sh (Deno binary, Vulkan/EGL loaders, run.sh, the
 * tests' npm cache), then bundles every bench entrypoint with its peers (TensorFlow.js,
 * jax-js) into one self-contained file each under `.gpu/bench/` with esbuild
 * (`--platform=node`, ESM, a banner that defines `require` through node:module's
 * createRequire), so the bench suite needs no npm cache there. `npm:` specifiers are resolved
 * from a node_modules directory that Deno fills in a scratch folder.
 *
 * Then, on the GPU machine: `bash .gpu/run.sh deno task bench:gpu` (deno.json turns the
 * lockfile off for `deno task` itself, so it fetches nothing first; the GPU machine has no
 * registry). PyTorch beside it: `bash .gpu/run.sh python3 bench/torch_bench.py`.
 * Pass `--no-kit` to skip prepare.sh (bundle only, e.g. to test the bundles locally).
 */
// deno-lint-ignore no-import-prefix
import * as esbuild from "npm:esbuild@0.25.12";

const root = new URL("../", import.meta.url).pathname;
const out = `${root}.gpu/bench/`;
const scratch = `${root}.gpu/npm-scratch/`;
const noKit = Deno.args.includes("--no-kit");

async function run(cmd: string, args: string[], cwd = root): Promise<void> {
  const p = await new Deno.Command(cmd, { args, cwd, stdout: "inherit", stderr: "inherit" })
    .output();
  if (p.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited with ${p.code}`);
}

if (!noKit) {
  await run("bash", ["../shared/gpu/prepare.sh"]);
  // prepare.sh caches every tests/ file without the lockfile (deno.json turns it off), Dawn's
  // preload (npm webgpu, ~130 MiB unpacked) included, which blows the 64 MiB carry. The bundles
  // below need no cache: re-cache only the graph of `deno task test` (the wgpu suite), against
  // deno.lock as that task reads it; lazy npm caching (deno.json "unstable") fetches only the
  // packages that graph imports (fast-check, js-tiktoken, @huggingface/tokenizers: ~30 MB).
  const denoDir = `${root}.gpu/deno_dir`;
  await Deno.remove(denoDir, { recursive: true });
  const tests: string[] = [];
  for await (const e of Deno.readDir(`${root}tests`)) {
    if (e.isFile && e.name.endsWith(".ts") && e.name !== "dawn_preload.ts") {
      tests.push(`tests/${e.name}`);
    }
  }
  const p = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--lock=deno.lock", ...tests.sort()],
    cwd: root,
    env: { DENO_DIR: denoDir },
  }).output();
  if (p.code !== 0) {
    throw new Error(`deno cache of the tests failed:\n${new TextDecoder().decode(p.stderr)}`);
  }
}

const entries: string[] = [];
for await (const e of Deno.readDir(`${root}bench`)) {
  if (e.isFile && e.name.endsWith("_bench.ts")) entries.push(`${root}bench/${e.name}`);
}
entries.sort();

// A node_modules holding every npm: specifier the entrypoints reach.
const specs = new Set<string>();
for (const f of [...entries, `${root}bench/peers.ts`]) {
  for (const m of (await Deno.readTextFile(f)).matchAll(/"(npm:[^"]+)"/g)) specs.add(m[1]);
}
await Deno.mkdir(scratch, { recursive: true });
await Deno.writeTextFile(`${scratch}deno.json`, JSON.stringify({ nodeModulesDir: "auto" }));
await Deno.writeTextFile(
  `${scratch}deps.ts`,
  [...specs].map((s) => `import ${JSON.stringify(s)};`).join("\n") + "\n",
);
await run(Deno.execPath(), ["install", "--entrypoint", "deps.ts"], scratch);

/** `npm:@scope/name@1.2.3/sub/path` → `@scope/name/sub/path`. */
function bare(spec: string): string {
  const s = spec.slice(4);
  const m = s.match(/^(@[^/]+\/[^@/]+|[^@/]+)(?:@[^/]+)?(\/.*)?$/);
  if (!m) throw new Error(`cannot parse ${spec}`);
  return m[1] + (m[2] ?? "");
}

const npmPlugin: esbuild.Plugin = {
  name: "deno-npm",
  setup(build) {
    build.onResolve({ filter: /^npm:/ }, async (a) => {
      const r = await build.resolve(bare(a.path), {
        kind: a.kind,
        resolveDir: scratch,
      });
      if (r.errors.length) return { errors: r.errors };
      return { path: r.path, sideEffects: r.sideEffects };
    });
  },
};

await Deno.mkdir(out, { recursive: true });
const result = await esbuild.build({
  entryPoints: entries,
  outdir: out,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "es2022",
  outExtension: { ".js": ".js" },
  banner: {
    js: 'import { createRequire as __mgCreateRequire } from "node:module";\n' +
      "const require = __mgCreateRequire(import.meta.url);",
  },
  plugins: [npmPlugin],
  logLevel: "warning",
  metafile: true,
  minify: true,
});
await esbuild.stop();
await Deno.remove(scratch, { recursive: true });
for (const [file, o] of Object.entries(result.metafile.outputs)) {
  console.log(`${file}  ${(o.bytes / 2 ** 20).toFixed(1)} MiB`);
}
await run("du", ["-sh", ".gpu"]);
console.log(
  'carry [".gpu"] and run: bash .gpu/run.sh deno task bench:gpu 2>&1 | tee $OUT/bench.log\n' +
    "(tests there: bash .gpu/run.sh deno task test; PyTorch: " +
    "bash .gpu/run.sh python3 bench/torch_bench.py | tee $OUT/torch.log)",
);
