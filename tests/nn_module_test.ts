/**
 * The Module system: HF-style dotted names, parameters vs buffers, train/eval propagation,
 * stateDict / loadStateDict (every mismatch listed in one error, nothing copied on error),
 * seeded HF initialisation, zeroGrad and dispose.
 */
import * as mg from "../mod.ts";
import * as nn from "../nn/mod.ts";
import { expectMgError, gpu } from "./util.ts";

/** A decoder-shaped toy with the HF names of REFERENCE §5. */
class Block extends nn.Module {
  readonly input_layernorm = this.module("input_layernorm", new nn.RMSNorm(8));
  readonly mlp: nn.MLP;
  constructor(seed: number) {
    super();
    this.mlp = this.module("mlp", new nn.MLP(8, 12, { seed }));
  }
}

class Inner extends nn.Module {
  readonly embed_tokens: nn.Embedding;
  readonly layers: nn.ModuleList<Block>;
  readonly norm: nn.RMSNorm;
  readonly bias: mg.Tensor;
  constructor(seed: number) {
    super();
    this.embed_tokens = this.module("embed_tokens", new nn.Embedding(11, 8, { seed }));
    this.layers = this.module(
      "layers",
      new nn.ModuleList([0, 1].map((i) => new Block(nn.deriveSeed(seed, `layers.${i}`)!))),
    );
    this.norm = this.module("norm", new nn.RMSNorm(8));
    this.bias = this.buffer("e_score_correction_bias", mg.zeros([4]));
  }
}

class Toy extends nn.Module {
  readonly model: Inner;
  readonly lm_head: nn.Linear;
  constructor(seed = 1) {
    super();
    this.model = this.module("model", new Inner(nn.deriveSeed(seed, "model")!));
    this.lm_head = this.module("lm_head", new nn.Linear(8, 11, { bias: false, seed: seed + 7 }));
  }
}

const EXPECTED_NAMES = [
  "model.embed_tokens.weight",
  "model.layers.0.input_layernorm.weight",
  "model.layers.0.mlp.gate_proj.weight",
  "model.layers.0.mlp.up_proj.weight",
  "model.layers.0.mlp.down_proj.weight",
  "model.layers.1.input_layernorm.weight",
  "model.layers.1.mlp.gate_proj.weight",
  "model.layers.1.mlp.up_proj.weight",
  "model.layers.1.mlp.down_proj.weight",
  "model.norm.weight",
  "lm_head.weight",
];

async function values(t: mg.Tensor): Promise<number[]> {
  return Array.from(await t.data());
}

Deno.test("namedParameters gives HF dotted names in registration order; buffers are separate", async () => {
  await gpu();
  const m = new Toy();
  const names = [...m.namedParameters()].map(([n]) => n);
  if (names.join("\n") !== EXPECTED_NAMES.join("\n")) throw new Error(names.join("\n"));
  const buffers = [...m.namedBuffers()].map(([n]) => n);
  if (buffers.join() !== "model.e_score_correction_bias") throw new Error(buffers.join());
  const sd = m.stateDict();
  if (sd.size !== EXPECTED_NAMES.length + 1 || !sd.has("model.e_score_correction_bias")) {
    throw new Error(`stateDict has ${[...sd.keys()]}`);
  }
  if (m.parameters().length !== EXPECTED_NAMES.length) throw new Error("parameters() count");
  if (!m.parameters().every((p) => p.requiresGrad)) throw new Error("params must require grad");
  if (m.model.bias.requiresGrad) throw new Error("buffers must not require grad");
  const expectedCount = 11 * 8 + 2 * (8 + 3 * 8 * 12) + 8 + 8 * 11;
  if (m.numParameters() !== expectedCount) throw new Error(`${m.numParameters()} params`);
  const mods = [...m.namedModules()].map(([n]) => n);
  if (!mods.includes("model.layers.1.mlp.down_proj") || mods[0] !== "") {
    throw new Error(mods.join());
  }
  if (m.model.layers.length !== 2 || m.model.layers.at(1) !== [...m.model.layers][1]) {
    throw new Error("ModuleList indexing");
  }
  expectMgError(() => m.model.layers.at(2), "ModuleList.at", "out of range");
  m.dispose();
});

Deno.test("train()/eval() propagate the training flag to every descendant", async () => {
  await gpu();
  const m = new Toy();
  const all = () => [...m.namedModules()].map(([, x]) => x.training);
  if (!all().every((t) => t)) throw new Error("modules start in training mode");
  if (m.eval() !== m || all().some((t) => t)) throw new Error("eval() must reach every module");
  m.train();
  if (!all().every((t) => t)) throw new Error("train() must reach every module");
  m.dispose();
});

Deno.test("registration rejects dotted, empty and duplicate names", async () => {
  await gpu();
  class Bad extends nn.Module {
    constructor(kind: number) {
      super();
      if (kind === 0) this.param("a.b", mg.zeros([1]));
      if (kind === 1) this.module("", new nn.RMSNorm(2));
      if (kind === 2) {
        this.param("w", mg.zeros([1]));
        this.buffer("w", mg.zeros([1]));
      }
    }
  }
  expectMgError(() => new Bad(0), "Bad.param", "no dots");
  expectMgError(() => new Bad(1), "Bad.module");
  expectMgError(() => new Bad(2), "Bad.buffer", "already registered");
});

Deno.test("construction is deterministic by seed; HF init: N(0, 0.02²) weights, zero bias, unit gains", async () => {
  await gpu();
  const a = new Toy(5);
  const b = new Toy(5);
  const c = new Toy(6);
  let differs = false;
  for (const [name, t] of a.namedParameters()) {
    const va = await values(t);
    const vb = await values(b.stateDict().get(name)!);
    if (va.some((v, i) => v !== vb[i])) throw new Error(`${name} differs for the same seed`);
    const vc = await values(c.stateDict().get(name)!);
    if (name.endsWith("layernorm.weight") || name === "model.norm.weight") {
      if (va.some((v) => v !== 1)) throw new Error(`${name} must start at ones`);
    } else if (va.some((v, i) => v !== vc[i])) differs = true;
  }
  if (!differs) throw new Error("a different seed must give different weights");
  // Two projections of one MLP must not share their random stream.
  const g = await values(a.model.layers.at(0).mlp.gateProj.weight);
  const u = await values(a.model.layers.at(0).mlp.upProj.weight);
  if (g.every((v, i) => v === u[i])) throw new Error("gate_proj and up_proj are identical");
  const big = new nn.Linear(128, 96, { seed: 3 });
  const w = await values(big.weight);
  const mean = w.reduce((s, v) => s + v, 0) / w.length;
  const std = Math.sqrt(w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length);
  // 12288 draws: the sample std is within ~1% of 0.02 and the mean within ~2e-4 of 0.
  if (Math.abs(std - 0.02) > 0.001 || Math.abs(mean) > 1e-3) {
    throw new Error(`init std ${std}, mean ${mean}; expected 0.02 and 0`);
  }
  if ((await values(big.bias!)).some((v) => v !== 0)) throw new Error("bias must start at zero");
  for (const m of [a, b, c, big]) m.dispose();
});

Deno.test("loadStateDict copies every tensor; self-load is a no-op; a record works too", async () => {
  await gpu();
  const a = new Toy(1);
  const b = new Toy(2);
  b.loadStateDict(a.stateDict());
  for (const [name, t] of a.stateDict()) {
    const va = await values(t);
    const vb = await values(b.stateDict().get(name)!);
    if (va.some((v, i) => v !== vb[i])) throw new Error(`${name} not copied`);
  }
  // Copies, not aliases: changing a does not change b.
  a.lm_head.weight.assign(mg.zerosLike(a.lm_head.weight).keep());
  if ((await values(b.lm_head.weight)).every((v) => v === 0)) throw new Error("b aliases a");
  a.loadStateDict(a.stateDict());
  const lin = new nn.Linear(2, 2);
  const w = mg.tensor([[1, 2], [3, 4]]);
  const bias = mg.tensor([5, 6]);
  lin.loadStateDict({ weight: w, bias });
  if ((await values(lin.weight)).join() !== "1,2,3,4") throw new Error("record load");
  for (const m of [a, b, lin]) m.dispose();
  w.dispose();
  bias.dispose();
});

Deno.test("loadStateDict lists every mismatch (missing, unexpected, shape, dtype) and copies nothing", async () => {
  await gpu();
  const m = new Toy(1);
  const before = await values(m.model.norm.weight);
  const sd = new Map(m.stateDict());
  sd.delete("model.layers.1.mlp.up_proj.weight");
  sd.delete("lm_head.weight");
  const extra = mg.zeros([3]);
  sd.set("model.layers.7.mlp.gate_proj.weight", extra);
  const wrongShape = mg.zeros([12, 9]);
  sd.set("model.layers.0.mlp.gate_proj.weight", wrongShape);
  const wrongDtype = mg.zeros([4], { dtype: "i32" });
  sd.set("model.e_score_correction_bias", wrongDtype);
  const norm = mg.full([8], 3);
  sd.set("model.norm.weight", norm);
  const e = expectMgError(
    () => m.loadStateDict(sd),
    "Toy.loadStateDict",
    "5 problem(s)",
    "missing model.layers.1.mlp.up_proj.weight (f32 [12, 8])",
    "missing lm_head.weight",
    "unexpected model.layers.7.mlp.gate_proj.weight (f32 [3])",
    "shape mismatch for model.layers.0.mlp.gate_proj.weight: expected [12, 8], got [12, 9]",
    "dtype mismatch for model.e_score_correction_bias: expected f32, got i32",
  );
  if (e.message.includes("model.norm.weight")) throw new Error("a good entry was reported");
  const after = await values(m.model.norm.weight);
  if (after.some((v, i) => v !== before[i])) throw new Error("a failed load must copy nothing");
  // Non-strict: missing / unexpected are returned, shape errors still throw.
  sd.set("model.layers.0.mlp.gate_proj.weight", m.model.layers.at(0).mlp.gateProj.weight);
  sd.set("model.e_score_correction_bias", m.model.bias);
  const r = m.loadStateDict(sd, { strict: false });
  if (r.missing.length !== 2 || r.unexpected.join() !== "model.layers.7.mlp.gate_proj.weight") {
    throw new Error(JSON.stringify(r));
  }
  if ((await values(m.model.norm.weight)).some((v) => v !== 3)) throw new Error("not loaded");
  for (const t of [extra, wrongShape, wrongDtype, norm]) t.dispose();
  m.dispose();
});

Deno.test("zeroGrad clears gradients and dispose frees every parameter, buffer and gradient", async () => {
  await gpu();
  await mg.sync();
  const base = mg.memory();
  const m = new Toy(3);
  const ids = mg.tensor([[1, 2, 3]], { dtype: "i32" });
  mg.scope(() => {
    let h = m.model.embed_tokens.forward(ids);
    for (const layer of m.model.layers) h = layer.mlp.forward(layer.input_layernorm.forward(h));
    m.lm_head.forward(m.model.norm.forward(h)).sum().backward();
  });
  if (!m.parameters().every((p) => p.grad)) throw new Error("every parameter gets a gradient");
  m.zeroGrad();
  if (m.parameters().some((p) => p.grad)) throw new Error("zeroGrad must clear .grad");
  mg.scope(() => m.lm_head.forward(m.model.norm.forward(mg.ones([1, 8]))).sum().backward());
  m.dispose();
  ids.dispose();
  await mg.sync();
  const end = mg.memory();
  if (end.inUseBytes !== base.inUseBytes || end.liveTensors !== base.liveTensors) {
    throw new Error(`dispose leaked: ${JSON.stringify(base)} -> ${JSON.stringify(end)}`);
  }
  if (!m.lm_head.weight.isDisposed) throw new Error("weights must be disposed");
});
