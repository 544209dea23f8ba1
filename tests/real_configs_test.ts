/**
 * The public config.json files of Kimi K2, DeepSeek-V3 and Moonlight (tests/fixtures/, see its
 * README for provenance) load with transformers' semantics and report their parameter counts
 * without allocating anything; their YaRN rotary embeddings run: micro models that copy K2's
 * and DeepSeek-V3's exact rope_parameters (d_r 64) match the float64 MLA reference at
 * positions 100000+ and 150000+.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { loadConfig, toHfConfig } from "../nn/hf_config.ts";
import { makeConfig } from "../nn/config.ts";
import { MultiHeadLatentAttention } from "../nn/mla.ts";
import { KimiLM, parameterCounts, parameterShapes } from "../nn/model.ts";
import { assertClose, gpu, seededValues } from "./util.ts";
import { nd } from "./reference/ndarray.ts";
import { type MlaDims, mlaParamShapes, mlaRef, type MlaWeights } from "./reference/mla.ts";

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

Deno.test("YaRN configs are runnable: K2 and DeepSeek-V3 pass the rope check without allocating", async () => {
  await gpu();
  await mg.sync();
  const before = mg.memory().allocatedBytes;
  for (const c of [await k2(), await dsv3(), await moonlight()]) {
    mg.nn.requireRunnableRope("test", c);
    parameterShapes(c);
  }
  assert.equal(mg.memory().allocatedBytes, before);
  // A rope type the layers cannot run is still refused before anything is allocated.
  const bad = { ...makeConfig("tiny"), rope_parameters: { rope_type: "linear", rope_theta: 1e4 } };
  assert.throws(() => new KimiLM(bad as never), /rope_type "linear"/);
  assert.equal(mg.memory().allocatedBytes, before);
});

/** Seeded O(1) weights for an MLA layer of dims z, width D (HF names). */
function weightsFor(z: MlaDims, D: number, seed: number): MlaWeights {
  const w: MlaWeights = {};
  let k = 0;
  for (const [name, shape] of Object.entries(mlaParamShapes(z, D))) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = 2 / Math.sqrt(shape[shape.length - 1]);
    const v = name.includes("layernorm")
      ? seededValues(n, seed + 97 * ++k, 0.5, 1.5)
      : seededValues(n, seed + 97 * ++k, -a, a);
    w[name] = nd(v, shape);
  }
  return w;
}

Deno.test("micro models with the exact rope_parameters of Kimi K2 and DeepSeek-V3 (d_r 64): MLA at positions 100000+ / 150000+ matches float64, decode included (5e-5)", async () => {
  await gpu();
  for (const [cfg, offset] of [[await k2(), 100000], [await dsv3(), 150000]] as const) {
    const micro = makeConfig({
      hidden_size: 32,
      num_attention_heads: 2,
      num_key_value_heads: 2,
      q_lora_rank: 16,
      kv_lora_rank: 16,
      qk_nope_head_dim: 8,
      qk_rope_head_dim: cfg.qk_rope_head_dim,
      v_head_dim: 8,
      max_position_embeddings: cfg.max_position_embeddings,
      rope_parameters: cfg.rope_parameters,
      rope_interleave: cfg.rope_interleave,
    });
    const z: MlaDims = {
      H: 2,
      rq: 16,
      rkv: 16,
      dn: 8,
      dr: 64,
      dv: 8,
      theta: cfg.rope_parameters.rope_theta,
      rope: cfg.rope_parameters,
    };
    const D = 32, B = 1, T = 4;
    const w = weightsFor(z, D, 5);
    const mla = new MultiHeadLatentAttention(micro);
    const sd = new Map<string, mg.Tensor>();
    for (const [name, a] of Object.entries(w)) {
      sd.set(name, mg.tensor(Float32Array.from(a.data), { shape: [...a.shape] }));
    }
    mla.loadStateDict(sd);
    for (const t of sd.values()) t.dispose();
    const xv = seededValues(B * T * D, 9, -1, 1);
    const x = mg.tensor(xv, { shape: [B, T, D] });
    const ref = mlaRef(nd(xv, [B, T, D]), w, z, offset);
    const stats = new mg.nn.StepStats();
    const y = mla.forward(x, offset, { stats });
    const tol = { rtol: 5e-5, atol: 5e-5 };
    assertClose(await y.data(), ref.out, tol, `${cfg.hf_metadata.model_type} forward`);
    assertClose(await stats.maxLogits(mla)!.data(), ref.maxLogits, tol, "max logits");
    stats.dispose();
    assert.ok(
      Math.abs(
        mla.softmaxScale * Math.sqrt(8 + 64) / mg.nn.softmaxScaleFactor(cfg.rope_parameters) - 1,
      ) < 1e-15,
    );
    y.dispose();
    // Decode at the same positions: a cache that already holds `offset` tokens is costly to
    // fill, so compare the absorbed decode from position 0 against the float64 forward there.
    const cache = mla.newCache(B);
    const out: number[] = [];
    for (let t = 0; t < T; t++) {
      const xs = x.slice(1, t, t + 1);
      const yt = mla.forwardCached(xs, cache);
      out.push(...await yt.data());
      xs.dispose();
      yt.dispose();
    }
    assertClose(out, mlaRef(nd(xv, [B, T, D]), w, z, 0).out, tol, "absorbed decode");
    cache.dispose();
    x.dispose();
    mla.dispose();
  }
});
