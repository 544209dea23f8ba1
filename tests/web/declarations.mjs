/**
 * Checks that `dist/moongrad.d.ts` is usable: TypeScript (npm `typescript`, strict, lib
 * checking on) compiles a consumer of `dist/moongrad.js` that uses tensors, autograd, the K2
 * model, MuonClip and generation with no error, and reports the two type errors planted in a
 * second consumer (so the declarations are not `any`). Exits non-zero on failure.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
// Dynamic imports: `deno check tests/` must not need tests/web/node_modules or dist/.
const { default: ts } = await import("typescript");

const here = dirname(fileURLToPath(import.meta.url));
const bundle = join(here, "../../dist/moongrad.js");

const GOOD = `
import * as mg from ${JSON.stringify(bundle)};
const info: mg.DeviceInfo = await mg.init();
const x = mg.tensor([[1, 2], [3, 4]]);
const w = mg.randn([2, 3], { seed: 1, requiresGrad: true });
const loss: mg.Tensor = x.matmul(w).silu().sum();
loss.backward();
const grad: mg.TensorData = await w.grad!.data();
const value: number = await loss.item();
mg.scope(() => x.softmax(-1));
const mem: mg.MemoryStats = mg.memory();
const model = new mg.nn.KimiLM("tiny", { seed: 0 });
const opt = new mg.optim.MuonClip(model, { lr: 2e-2, tau: 100 });
const stats = new mg.nn.StepStats();
const ids = mg.tensor(new Int32Array(4), { shape: [1, 4], dtype: "i32" });
mg.scope(() => model.loss(ids, ids, { stats }).backward());
await opt.step(stats);
opt.zeroGrad();
const read: mg.nn.StepStatsValues = await stats.read(model);
const logits: Float32Array[] = read.maxLogits;
stats.dispose();
const out: number[][] = await model.generate(ids, { maxNewTokens: 2, temperature: 0 });
export { grad, info, logits, mem, out, value };
`;

const BAD = `
import * as mg from ${JSON.stringify(bundle)};
const s: string = await mg.tensor([1]).item();
mg.tensor([1]).matmul("x");
export { s };
`;

const options = {
  strict: true,
  noEmit: true,
  skipLibCheck: false,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.ESNext,
  moduleResolution: ts.ModuleResolutionKind.Bundler,
  lib: ["lib.es2022.d.ts", "lib.esnext.disposable.d.ts", "lib.dom.d.ts"],
  types: ["@webgpu/types"],
};

/** Type-checks one in-memory consumer module; returns its diagnostics as text lines. */
function diagnostics(source) {
  const file = join(here, "consumer.ts");
  const host = ts.createCompilerHost(options);
  host.getCurrentDirectory = () => here; // `types` resolve from tests/web/node_modules
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    name === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file
      ? `${d.file.fileName.replace(here + "/", "")}:${
        d.file.getLineAndCharacterOfPosition(d.start).line + 1
      }`
      : "";
    return `TS${d.code} ${where} ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

let failed = 0;
const good = diagnostics(GOOD);
console.log(`  ${good.length ? "FAIL" : "ok  "} a consumer of moongrad.js type-checks (strict)`);
for (const d of good) console.log(`       ${d}`);
if (good.length) failed++;

const bad = diagnostics(BAD);
const want = ["TS2322", "TS2345"];
const gotCodes = bad.map((d) => d.split(" ")[0]).sort();
const ok = gotCodes.join() === want.join();
console.log(`  ${ok ? "ok  " : "FAIL"} planted type errors are reported (${gotCodes.join(", ")})`);
if (!ok) {
  for (const d of bad) console.log(`       ${d}`);
  failed++;
}
process.exit(failed ? 1 : 0);
