/**
 * The layering holds in the import graph: core imports nothing from the layers above it, no
 * import cycle crosses two layers (core, ops, nn, optim, io, tokenizer), and core alone loads,
 * allocates and reads a tensor back without any ops module in its module graph (a subprocess
 * and `deno info --json`). The Tensor methods that run kernels are installed by
 * ops/tensor_methods.ts, which nn/mod.ts loads too: a subprocess that imports only nn/mod.ts
 * (and `init` from core) calls them.
 *
 * Measured when this test was added (all imports, type-only ones included): before, one
 * strongly connected component of 16 modules (core/tensor, core/autograd, core/scope and 13
 * ops modules) holding 155 elementary cycles; after, none crossing a layer — left are
 * core/tensor ↔ core/autograd, core/scope (type-only imports, erased at run time) and
 * ops/elementwise ↔ ops/layout ↔ ops/reduce (5 cycles in all, 3 of them at run time).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const LAYERS = ["core", "ops", "nn", "optim", "io", "tokenizer"] as const;

interface Edge {
  to: string;
  typeOnly: boolean;
}

/** Every relative specifier imported or re-exported by `src` (static and dynamic). */
function importsOf(src: string): { spec: string; typeOnly: boolean }[] {
  const out: { spec: string; typeOnly: boolean }[] = [];
  const patterns = [
    /^\s*(?:import|export)\s+(type\s+)?(?:[^;"']*?\s+from\s+)?["'](\.{1,2}\/[^"']+)["']/gm,
    /\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g,
  ];
  for (const m of src.matchAll(patterns[0])) out.push({ spec: m[2], typeOnly: !!m[1] });
  for (const m of src.matchAll(patterns[1])) out.push({ spec: m[1], typeOnly: false });
  return out;
}

function resolve(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const p of spec.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== ".") parts.push(p);
  }
  return parts.join("/");
}

async function tsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    if (e.isFile && e.name.endsWith(".ts")) out.push(`${dir}/${e.name}`);
    else if (e.isDirectory) out.push(...await tsFiles(`${dir}/${e.name}`));
  }
  return out.sort();
}

/** The library's import graph: file (relative to the root) → its imports inside the library. */
async function libraryGraph(): Promise<Map<string, Edge[]>> {
  const files = ["mod.ts", ...(await Promise.all(LAYERS.map(tsFiles))).flat()];
  const known = new Set(files);
  const graph = new Map<string, Edge[]>();
  for (const f of files) {
    const src = await Deno.readTextFile(`${ROOT}${f}`);
    const edges = importsOf(src)
      .map(({ spec, typeOnly }) => ({ to: resolve(f, spec), typeOnly }))
      .filter((e) => known.has(e.to));
    graph.set(f, edges);
  }
  return graph;
}

/** Strongly connected components with more than one module (Tarjan). */
function cycles(graph: Map<string, Edge[]>, runtimeOnly: boolean): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const e of graph.get(v) ?? []) {
      if (runtimeOnly && e.typeOnly) continue;
      if (!index.has(e.to)) {
        visit(e.to);
        low.set(v, Math.min(low.get(v)!, low.get(e.to)!));
      } else if (onStack.has(e.to)) {
        low.set(v, Math.min(low.get(v)!, index.get(e.to)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

const layerOf = (file: string) => file.split("/")[0];

Deno.test("import graph: no file under core/ imports ops, nn, optim, io, cli or tokenizer", async () => {
  const bad: string[] = [];
  for (const f of await tsFiles("core")) {
    const src = await Deno.readTextFile(`${ROOT}${f}`);
    for (const { spec } of importsOf(src)) {
      const target = resolve(f, spec);
      if (layerOf(target) !== "core") bad.push(`${f} imports ${spec}`);
    }
  }
  assert.deepEqual(bad, [], `core must be self-contained:\n  ${bad.join("\n  ")}`);
});

Deno.test("import graph: the scanner sees relative, type-only, re-export and dynamic imports", () => {
  const src = [
    'import { a } from "../ops/a.ts";',
    'import type { B } from "./b.ts";',
    'export { c } from "../nn/c.ts";',
    'import "../ops/side_effect.ts";',
    'const d = await import("../io/d.ts");',
    'import { e } from "jsr:@std/e";',
  ].join("\n");
  assert.deepEqual(importsOf(src), [
    { spec: "../ops/a.ts", typeOnly: false },
    { spec: "./b.ts", typeOnly: true },
    { spec: "../nn/c.ts", typeOnly: false },
    { spec: "../ops/side_effect.ts", typeOnly: false },
    { spec: "../io/d.ts", typeOnly: false },
  ]);
  const g = new Map<string, Edge[]>([
    ["core/a.ts", [{ to: "ops/b.ts", typeOnly: false }]],
    ["ops/b.ts", [{ to: "core/a.ts", typeOnly: true }]],
  ]);
  assert.deepEqual(cycles(g, false), [["core/a.ts", "ops/b.ts"]]);
  assert.deepEqual(cycles(g, true), []);
});

Deno.test("import graph: no import cycle crosses two layers (core, ops, nn, optim, io, tokenizer)", async () => {
  const graph = await libraryGraph();
  assert.ok(graph.size > 60, `only ${graph.size} library modules found`);
  const all = cycles(graph, false);
  const crossing = all.filter((c) => new Set(c.map(layerOf)).size > 1);
  assert.deepEqual(
    crossing,
    [],
    `import cycles between layers:\n  ${crossing.map((c) => c.join(" ")).join("\n  ")}`,
  );
  // Layering: an edge may only point to the same or a lower layer. io is nn's peer: KimiLM's
  // save/load helpers use io/pretrained.ts, which reads nn's config helpers (no cycle).
  const rank: Record<string, number> = {
    core: 0,
    tokenizer: 0,
    ops: 1,
    nn: 2,
    io: 2,
    optim: 3,
    "mod.ts": 4,
  };
  const upward: string[] = [];
  for (const [from, edges] of graph) {
    for (const e of edges) {
      if (rank[layerOf(e.to)] > rank[layerOf(from)]) upward.push(`${from} → ${e.to}`);
    }
  }
  assert.deepEqual(upward, [], `imports from a lower layer into a higher one`);
});

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = Deno.env.toObject();
  env.XDG_RUNTIME_DIR ??= "/tmp";
  const out = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, env }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The local modules `deno info --json` lists for `entry`, relative to the root. */
async function moduleGraph(entry: string): Promise<string[]> {
  const r = await run(["info", "--json", entry]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { modules: { specifier: string }[] };
  return info.modules.map((m) => m.specifier)
    .filter((s) => s.startsWith(`file://${ROOT}`))
    .map((s) => s.slice(`file://${ROOT}`.length));
}

Deno.test("import graph: core alone loads, allocates and reads a tensor back, with no ops module loaded (subprocess)", async () => {
  const entry = "tests/fixtures/import_graph/core_only.ts";
  const modules = await moduleGraph(entry);
  assert.ok(modules.includes("core/tensor.ts") && modules.includes("core/device.ts"), `${modules}`);
  const above = modules.filter((m) => m !== entry && !m.startsWith("core/"));
  assert.deepEqual(above, [], "the core-only module graph reaches beyond core/");
  const r = await run(["run", "-A", entry]);
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split("\n").find((l) => l.startsWith("CORE_ONLY "));
  assert.ok(line, `no report from the subprocess:\n${r.stdout}\n${r.stderr}`);
  const report = JSON.parse(line.slice("CORE_ONLY ".length));
  assert.deepEqual(report.back, [[1, 2, 3], [4, 5, 6]]);
  assert.equal(report.live, 1);
  assert.equal(report.after, 0);
  assert.match(report.methodError, /MoongradError: .*Tensor\.add: the ops layer is not loaded/);
});

Deno.test("import graph: importing only nn/mod.ts installs the Tensor methods (subprocess)", async () => {
  const entry = "tests/fixtures/import_graph/nn_only.ts";
  const modules = await moduleGraph(entry);
  assert.ok(!modules.includes("mod.ts"), "the fixture must not reach the root mod.ts");
  assert.ok(modules.includes("ops/tensor_methods.ts"), "nn/mod.ts must load the installer");
  const r = await run(["run", "-A", entry]);
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split("\n").find((l) => l.startsWith("NN_ONLY "));
  assert.ok(line, `no report from the subprocess:\n${r.stdout}\n${r.stderr}`);
  const report = JSON.parse(line.slice("NN_ONLY ".length));
  assert.deepEqual(report.shape, [1, 4, 32]);
  assert.equal(report.sums.length, 4);
  for (const s of report.sums) assert.ok(Math.abs(s - 1) < 1e-5, `softmax row sums ${report.sums}`);
});

Deno.test("import graph: every entry module loads the Tensor-method installer", async () => {
  for (const entry of ["mod.ts", "nn/mod.ts", "optim/mod.ts", "io/mod.ts"]) {
    const modules = await moduleGraph(entry);
    assert.ok(modules.includes("ops/tensor_methods.ts"), `${entry} does not load it`);
  }
});
