/**
 * The public config.json files of Kimi K2, DeepSeek-V3 and Moonlight (tests/fixtures/, see its
 * README for provenance) load with transformers' semantics and report their parameter counts
 * without allocating anything; YaRN configs parse but refuse to build, naming rope_scaling.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { loadConfig, toHfConfig } from "../nn/hf_config.ts";
import { makeConfig } from "../nn/config.ts";
import { MultiHeadLatentAttention } from "../nn/mla.ts";
import { KimiLM, parameterCounts, parameterShapes } from "../nn/model.ts";
import { gpu } from "./util.ts";

const dir = new URL("./fixtures/", import.meta.url).pathname;
const k2 = () => loadConfig(`${dir}kimi-k2-instruct`);
const dsv3 = () => loadConfig(`${dir}deepseek-v3/config.json`);
const moonlight = () => loadConfig(`${dir}moonlight-16b-a3b-instruct`);

Deno.test("Kimi K2 config.json: 1,026,408,209,408 parameters exactly, YaRN ×32, equals the kimi-k2 preset", async () => {
  const c = await k2();
  const n = parameterCounts(c);
  assert.equal(n.total, 1_026_408_209_408);
  assert.equal(n.active, 32_861_477_887); // "32 B activated"
  assert.deepEqual(c.rope_parameters, {
    rope_type: "yarn",
    rope_theta: 50000,
    factor: 32,
    original_max_position_embeddings: 4096,
    beta_fast: 1,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
    attention_factor: null,
    truncate: true,
  });
  assert.equal(c.hf_metadata.model_type, "kimi_k2");
  assert.equal(c.aux_loss_alpha, 0.001);
  // The preset is this file's architecture (metadata aside).
  assert.deepEqual({ ...c, hf_metadata: {} }, makeConfig("kimi-k2"));
  const shapes = parameterShapes(c);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), [576, 7168]);
  assert.deepEqual(shapes.get("model.layers.60.mlp.experts.383.down_proj.weight"), [7168, 2048]);
  assert.equal(shapes.has("model.layers.0.mlp.gate.weight"), false); // first layer dense
});

Deno.test("DeepSeek-V3 config.json: 671 B total / 37 B active (MTP layer excluded), 8 groups keep 4", async () => {
  const c = await dsv3();
  const n = parameterCounts(c);
  assert.equal(n.total, 671_026_404_352);
  assert.equal(n.active, 37_552_282_624);
  assert.equal(Math.round(n.total / 1e9), 671);
  assert.equal(Math.floor(n.active / 1e9), 37);
  assert.equal(c.num_nextn_predict_layers, 1);
  assert.equal(c.n_group, 8);
  assert.equal(c.topk_group, 4);
  assert.equal(c.first_k_dense_replace, 3);
  assert.equal(c.rope_parameters.rope_type, "yarn");
  assert.equal((c.rope_parameters as { factor: number }).factor, 40);
  assert.equal(c.rope_parameters.rope_theta, 10000);
  assert.equal([...parameterShapes(c).keys()].some((k) => k.startsWith("model.layers.61.")), false);
  assert.deepEqual((c.hf_metadata.quantization_config as { fmt: string }).fmt, "e4m3");
});

Deno.test("Moonlight config.json: 15.29 B / 2.24 B excluding embeddings, plain RoPE θ 50000, q_proj", async () => {
  const c = await moonlight();
  const n = parameterCounts(c);
  assert.equal(n.total - n.embedding, 15_289_019_904);
  assert.equal(n.active - n.embedding, 2_243_685_888);
  assert.equal((n.total / 1e9).toFixed(2), "15.96"); // "16B" with embeddings
  assert.deepEqual(c.rope_parameters, { rope_type: "default", rope_theta: 50000 });
  assert.equal(c.q_lora_rank, null);
  assert.equal(c.rms_norm_eps, 1e-5);
  const shapes = parameterShapes(c);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.q_proj.weight"), [16 * 192, 2048]);
  assert.deepEqual(shapes.get("model.layers.1.mlp.shared_experts.up_proj.weight"), [2816, 2048]);
});

Deno.test("the real configs round-trip through toHfConfig and counting allocates nothing", async () => {
  await gpu();
  await mg.sync();
  const before = mg.memory();
  for (const c of [await k2(), await dsv3(), await moonlight()]) {
    const back = mg.nn.configFromHf(JSON.parse(JSON.stringify(toHfConfig(c))));
    assert.deepEqual(
      { ...back, hf_metadata: {}, num_nextn_predict_layers: 0 },
      { ...c, hf_metadata: {}, num_nextn_predict_layers: 0 },
    );
    parameterCounts(c);
  }
  assert.deepEqual(mg.memory(), before);
});

Deno.test("YaRN configs refuse to build, naming rope_scaling, before allocating anything", async () => {
  await gpu();
  await mg.sync();
  const before = mg.memory().allocatedBytes;
  const c = await k2();
  assert.throws(() => new KimiLM(c), /KimiLM.*rope_scaling.*yarn/);
  assert.equal(mg.memory().allocatedBytes, before);
  // A small YaRN model: the attention layer refuses the same way.
  const small = makeConfig({
    max_position_embeddings: 1024,
    rope_parameters: { ...c.rope_parameters, original_max_position_embeddings: 32 } as never,
  });
  assert.throws(
    () => new MultiHeadLatentAttention(small),
    /MultiHeadLatentAttention.*rope_scaling/,
  );
  // Moonlight (plain RoPE) passes the check: its layers are buildable (not built here: 16 B).
  mg.nn.requireRunnableRope("test", await moonlight());
});
