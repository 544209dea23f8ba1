/**
 * `deno task build:web`: builds the browser/Node bundle into `dist/` (build output, not
 * committed):
 *
 * - `dist/moongrad.js`: the whole library (`mod.ts`) as one ES module (esbuild, ES2022, no
 *   dependencies), with `moongrad.js.map`;
 * - `dist/moongrad.d.ts` + `dist/types/`: its type declarations, one `.d.ts` per source file
 *   (TypeScript's declaration emit without type checking: the library's exports carry explicit
 *   types), relative `.ts` imports rewritten to `.js`. They name WebGPU types: consumers add
 *   `@webgpu/types` (and lib `esnext.disposable` or `esnext`, for `using`);
 * - `dist/web.js`: the live training page's module (`web/main.ts`), which imports the library
 *   from `./moongrad.js` instead of bundling a second copy.
 *
 * esbuild and TypeScript come from npm through dynamic imports, so only this task (and the
 * web tasks that call it) fetch them.
 */
const root = new URL("../", import.meta.url).pathname;
const dist = `${root}dist/`;

/** Library source directories: the page may reach them only through `mod.ts`. */
const LIBRARY_DIRS = ["core/", "ops/", "nn/", "optim/", "io/"];

/** Bundles mod.ts and the page; returns the bundle's size in bytes. */
async function bundle(): Promise<number> {
  // deno-lint-ignore no-import-prefix
  const esbuild = await import("npm:esbuild@0.25.12");
  const common = {
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    sourcemap: true,
    logLevel: "warning",
    legalComments: "none",
  } as const;
  await esbuild.build({ ...common, entryPoints: [`${root}mod.ts`], outfile: `${dist}moongrad.js` });
  // The page shares the one library instance (device, pools) through ./moongrad.js.
  const pagePlugin = {
    name: "moongrad-external",
    setup(b: { onResolve: (o: { filter: RegExp }, f: (a: ResolveArgs) => unknown) => void }) {
      b.onResolve({ filter: /.*/ }, (a) => {
        if (a.kind === "entry-point") return undefined;
        const abs = new URL(a.path, `file://${a.resolveDir}/`).pathname;
        if (abs === `${root}mod.ts`) return { path: "./moongrad.js", external: true };
        if (LIBRARY_DIRS.some((d) => abs.startsWith(root + d))) {
          return {
            errors: [{ text: `${a.importer} imports ${a.path}: import ../mod.ts instead` }],
          };
        }
        return undefined;
      });
    },
  };
  await esbuild.build({
    ...common,
    entryPoints: [`${root}web/main.ts`],
    outfile: `${dist}web.js`,
    plugins: [pagePlugin as never],
  });
  await esbuild.stop();
  return (await Deno.stat(`${dist}moongrad.js`)).size;
}

interface ResolveArgs {
  path: string;
  importer: string;
  resolveDir: string;
  kind: string;
}

/** Writes dist/types/**.d.ts and dist/moongrad.d.ts; returns the number of files. */
async function declarations(): Promise<number> {
  // deno-lint-ignore no-import-prefix
  const ts = (await import("npm:typescript@5.9.3")).default;
  const options = {
    declaration: true,
    emitDeclarationOnly: true,
    // Emit only: Deno's own types (WebGPU, Deno.*) are not in TypeScript's libs, and the
    // library's exports carry explicit types, so nothing needs inferring.
    noCheck: true,
    allowImportingTsExtensions: true,
    stripInternal: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    // esnext.disposable: without it `[Symbol.dispose]()` is emitted twice (TS2300 downstream).
    lib: ["lib.es2022.d.ts", "lib.esnext.disposable.d.ts", "lib.dom.d.ts"],
    types: [],
    rootDir: root,
    outDir: `${dist}types`,
  };
  const files: [string, string][] = [];
  const program = ts.createProgram([`${root}mod.ts`], options);
  const result = program.emit(undefined, (name: string, text: string) => {
    // Relative `.ts` specifiers become `.js`, which resolves to the `.d.ts` beside it.
    files.push([name, text.replace(/(["'])(\.{1,2}\/[^"']+)\.ts\1/g, "$1$2.js$1")]);
  });
  if (result.emitSkipped) {
    const msgs = result.diagnostics.map((d: { messageText: unknown }) =>
      ts.flattenDiagnosticMessageText(d.messageText as string, " ")
    );
    throw new Error(`declaration emit failed:\n${msgs.join("\n")}`);
  }
  for (const [name, text] of files) {
    await Deno.mkdir(name.slice(0, name.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(name, text);
  }
  await Deno.writeTextFile(
    `${dist}moongrad.d.ts`,
    "// Types of moongrad.js. WebGPU types come from @webgpu/types (add it to tsconfig types).\n" +
      'export * from "./types/mod.js";\n',
  );
  return files.length;
}

if (import.meta.main) {
  const t0 = performance.now();
  await Deno.remove(dist, { recursive: true }).catch(() => {});
  await Deno.mkdir(dist, { recursive: true });
  const size = await bundle();
  const n = await declarations();
  console.log(
    `build:web: dist/moongrad.js ${(size / 1024).toFixed(0)} KiB, dist/web.js, ` +
      `${n} declaration files in dist/types/ (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
}
