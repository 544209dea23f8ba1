import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { assertClose, gpu, microConfig } from "./util.ts";

const { KimiLM, makeConfig, parameterCounts, parameterShapes } = mg.nn;

/** A model small enough for a CPU adapter in a test: 2 layers (dense, then MoE). */
const micro = microConfig();

function ids(values: number[][]): mg.Tensor {
  return mg.tensor(Int32Array.from(values.flat()), { shape: [values.length, values[0].length] });
}

Deno.test("presets: tiny allocates what parameterShapes predicts; kimi-k2 is checked without allocating", async () => {
  await gpu();
  const tiny = makeConfig("tiny");
  const model = new KimiLM(tiny, { seed: 1 });
  const predicted = parameterShapes(tiny);
  const actual = model.stateDict();
  assert.deepEqual([...actual.keys()].sort(), [...predicted.keys()].sort());
  for (const [name, t] of actual) assert.deepEqual([...t.shape], predicted.get(name), name);
  const counts = parameterCounts(tiny);
  assert.equal(counts.total, model.numParameters());
  assert.ok(counts.total > 1e6 && counts.total < 3e6, `tiny has ${counts.total} parameters`);
  model.dispose();
  const k2 = parameterCounts(makeConfig("kimi-k2"));
  // Kimi K2: about 1.04 T parameters in total, 32 B active per token.
  assert.ok(Math.abs(k2.total / 1.04e12 - 1) < 0.02, `K2 total ${k2.total}`);
  assert.ok(Math.abs(k2.active / 32.6e9 - 1) < 0.03, `K2 active ${k2.active}`);
  const shapes = parameterShapes(makeConfig("kimi-k2"));
  assert.deepEqual(shapes.get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), [576, 7168]);
  assert.deepEqual(shapes.get("model.layers.5.mlp.experts.383.down_proj.weight"), [7168, 2048]);
  assert.deepEqual(shapes.get("model.layers.0.mlp.gate_proj.weight"), [18432, 7168]);
});

Deno.test("decoding with the latent cache, token by token, reproduces the full forward's logits", async () => {
  await gpu();
  const model = new KimiLM(micro, { seed: 3 });
  const seq = [[1, 5, 9, 2, 30, 7, 7, 0]];
  const full = mg.noGrad(() => model.forward(ids(seq)));
  const want = await full.data();
  const caches = model.newCaches(1);
  const got: number[] = [];
  // Prefill 3 tokens, then one at a time.
  const chunks = [[0, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 8]];
  for (const [a, b] of chunks) {
    const out = mg.noGrad(() => model.forward(ids([seq[0].slice(a, b)]), a, caches));
    got.push(...await out.data());
    out.dispose();
  }
  assert.equal(caches[0].length, 8);
  assert.equal(caches[0].floatsPerToken, micro.kv_lora_rank + micro.qk_rope_head_dim);
  assertClose(got, want, { rtol: 1e-4, atol: 1e-4 }, "cached decode vs full forward");
  for (const c of caches) c.dispose();
  full.dispose();
  model.dispose();
});

Deno.test("a model saved and loaded gives identical logits; generate is seeded", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  const a = new KimiLM(micro, { seed: 4 });
  const b = new KimiLM(micro, { seed: 5 });
  await mg.io.saveSafetensors(`${dir}/model.safetensors`, a, { config: mg.nn.toHfConfig(micro) });
  await mg.io.loadInto(b, `${dir}/model.safetensors`);
  const x = ids([[3, 1, 4, 1, 5, 9]]);
  const la = mg.noGrad(() => a.forward(x));
  const lb = mg.noGrad(() => b.forward(x));
  assert.deepEqual(await lb.data(), await la.data());
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  assert.equal(config.model_type, "deepseek_v3");
  assert.equal(config.kv_lora_rank, micro.kv_lora_rank);
  const g1 = await a.generate(x, { maxNewTokens: 5, temperature: 0.8, topK: 5, seed: 11 });
  const g2 = await b.generate(x, { maxNewTokens: 5, temperature: 0.8, topK: 5, seed: 11 });
  assert.equal(g1[0].length, 5);
  assert.deepEqual(g2, g1);
  const greedy = await a.generate(x, { maxNewTokens: 1, temperature: 0 });
  const lastRow = (await la.data()).slice(5 * micro.vocab_size, 6 * micro.vocab_size);
  assert.equal(greedy[0][0], lastRow.indexOf(Math.max(...lastRow)));
  for (const t of [x, la, lb]) t.dispose();
  a.dispose();
  b.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a YaRN model with half-split RoPE: cached decode = full forward past the original context; savePretrained/fromPretrained keep both", async () => {
  await gpu();
  const yarn = makeConfig({
    ...micro,
    max_position_embeddings: 16,
    rope_interleave: false,
    rope_parameters: {
      rope_type: "yarn",
      rope_theta: 10000,
      factor: 4,
      original_max_position_embeddings: 4,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 1,
      attention_factor: null,
      truncate: true,
    },
  });
  const model = new KimiLM(yarn, { seed: 6 });
  const seq = [[4, 8, 15, 16, 23, 10, 1, 2, 3]];
  const full = mg.noGrad(() => model.forward(ids(seq)));
  const want = await full.data();
  const caches = model.newCaches(1);
  const got: number[] = [];
  for (const [a, b] of [[0, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7], [7, 8], [8, 9]]) {
    const out = mg.noGrad(() => model.forward(ids([seq[0].slice(a, b)]), a, caches));
    got.push(...await out.data());
    out.dispose();
  }
  assertClose(got, want, { rtol: 1e-4, atol: 1e-4 }, "cached decode vs full forward");
  const dir = await Deno.makeTempDir();
  await model.savePretrained(dir);
  const back = await KimiLM.fromPretrained(dir);
  assert.equal(back.config.rope_interleave, false);
  assert.deepEqual(back.config.rope_parameters, yarn.rope_parameters);
  const again = mg.noGrad(() => back.forward(ids(seq)));
  assert.deepEqual(await again.data(), want);
  for (const c of caches) c.dispose();
  for (const t of [full, again]) t.dispose();
  model.dispose();
  back.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Adam-style updates written here halve the loss of a repeated short sequence", async () => {
  await gpu();
  const model = new KimiLM(micro, { seed: 6 });
  const seq = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4, 5];
  const x = ids([seq.slice(0, -1), seq.slice(0, -1)]);
  const y = ids([seq.slice(1), seq.slice(1)]);
  const params = model.parameters();
  const m = params.map((p) => mg.zerosLike(p));
  const v = params.map((p) => mg.zerosLike(p));
  const [lr, b1, b2, eps] = [1e-2, 0.9, 0.99, 1e-8];
  const losses: number[] = [];
  let steady = 0;
  for (let step = 1; step <= 40; step++) {
    const loss = mg.scope(() => {
      const l = model.loss(x, y);
      l.backward();
      mg.noGrad(() =>
        params.forEach((p, i) => {
          const g = p.grad!;
          m[i].assign(m[i].mul(b1).add(g.mul(1 - b1)));
          v[i].assign(v[i].mul(b2).add(g.square().mul(1 - b2)));
          const mh = m[i].div(1 - b1 ** step);
          const vh = v[i].div(1 - b2 ** step);
          p.assign(p.sub(mh.div(vh.sqrt().add(eps)).mul(lr)));
          p.zeroGrad();
        })
      );
      return l.detach();
    });
    if (step === 1 || step % 10 === 0) losses.push(await loss.item());
    loss.dispose();
    if (step === 1) steady = mg.memory().inUseBytes;
  }
  console.log(`loss ${losses.map((l) => l.toFixed(3)).join(" → ")}`);
  assert.ok(losses[losses.length - 1] < losses[0] / 2, `loss ${losses[0]} → ${losses.at(-1)}`);
  assert.equal(mg.memory().inUseBytes, steady, "in-use bytes flat across 40 training steps");
  for (const t of [x, y, ...m, ...v]) t.dispose();
  model.dispose();
});
