/**
 * config.json with transformers' DeepseekV3Config semantics (nn/hf_config.ts): HF defaults for
 * absent keys, the 4.x and 5.x rotary forms, YaRN, refusal of every unknown key or
 * unimplemented value (naming the key), toHfConfig round trips that both transformers versions
 * read the same way, and the presets. Pure CPU: no adapter needed.
 */
import assert from "node:assert/strict";
import { type KimiConfig, makeConfig, PRESETS } from "../nn/config.ts";
import {
  configFromHf,
  HF_DEFAULTS,
  HF_KEYS,
  loadConfig,
  ropeFromHf,
  toHfConfig,
} from "../nn/hf_config.ts";
import { MoongradError } from "../core/errors.ts";

/** Throws unless fn throws a MoongradError whose message contains every fragment. */
function rejects(fn: () => unknown, ...fragments: string[]): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof MoongradError)) throw new Error(`expected a MoongradError, got ${e}`);
    for (const f of fragments) {
      if (!e.message.includes(f)) throw new Error(`"${e.message}" does not mention "${f}"`);
    }
    return;
  }
  throw new Error(`nothing thrown; expected an error mentioning ${fragments.join(", ")}`);
}

/** A small valid config.json (4.x form) to vary. */
const SMALL = {
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  moe_intermediate_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  n_routed_experts: 8,
  num_experts_per_tok: 2,
  n_group: 4,
  topk_group: 2,
  first_k_dense_replace: 1,
  kv_lora_rank: 8,
  q_lora_rank: 12,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 4,
  v_head_dim: 8,
  max_position_embeddings: 256,
};

const YARN = {
  type: "yarn",
  factor: 4,
  original_max_position_embeddings: 64,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1,
  mscale_all_dim: 1,
};

Deno.test("configFromHf: absent keys take transformers' DeepseekV3Config defaults", () => {
  const c = configFromHf({});
  for (const [k, v] of Object.entries(HF_DEFAULTS)) {
    if (k === "rope_theta") continue;
    assert.deepEqual((c as unknown as Record<string, unknown>)[k], v, k);
  }
  // The values the brief lists, checked literally (transformers' __init__ signature).
  assert.equal(c.vocab_size, 129280);
  assert.equal(c.hidden_size, 7168);
  assert.equal(c.num_attention_heads, 128);
  assert.equal(c.num_key_value_heads, 128);
  assert.equal(c.n_routed_experts, 256);
  assert.equal(c.n_group, 8);
  assert.equal(c.topk_group, 4);
  assert.equal(c.first_k_dense_replace, 3);
  assert.equal(c.eos_token_id, 1);
  assert.equal(c.bos_token_id, 0);
  assert.equal(c.rms_norm_eps, 1e-6);
  assert.deepEqual(c.rope_parameters, { rope_type: "default", rope_theta: 10000 });
  assert.equal(c.rope_interleave, true);
  assert.equal(c.attention_bias, false);
  assert.equal(c.max_position_embeddings, 4096);
  // DeepSeek remote-code keys absent: noaux_tc / sigmoid, no aux loss, no MTP.
  assert.equal(c.aux_loss_alpha, 0);
  assert.equal(c.num_nextn_predict_layers, 0);
  assert.deepEqual(c.hf_metadata, {});
  // Absent keys are HF's, not the tiny preset's (the old behaviour).
  const part = configFromHf(SMALL);
  assert.equal(part.rms_norm_eps, 1e-6);
  assert.equal(part.eos_token_id, 1);
  assert.equal(part.initializer_range, 0.02);
  assert.notEqual(part.max_position_embeddings, PRESETS.tiny.max_position_embeddings);
});

Deno.test("configFromHf: num_key_value_heads null means num_attention_heads; absent means 128", () => {
  const { num_key_value_heads: _, ...rest } = SMALL;
  assert.equal(configFromHf({ ...rest, num_key_value_heads: null }).num_key_value_heads, 2);
  // HF's default is 128 (not "follow num_attention_heads"): with 2 heads that cannot run.
  rejects(() => configFromHf(rest), "num_key_value_heads 128", "num_attention_heads 2");
});

Deno.test("configFromHf: transformers 4.x and 5.x rotary forms give one rope_parameters", () => {
  const want = {
    rope_type: "yarn",
    rope_theta: 50000,
    factor: 4,
    original_max_position_embeddings: 64,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
    attention_factor: null,
    truncate: true,
  };
  const v4type = configFromHf({ ...SMALL, rope_theta: 50000, rope_scaling: YARN });
  const { type: _t, ...rest } = YARN;
  const v4ropeType = configFromHf({
    ...SMALL,
    rope_theta: 50000,
    rope_scaling: { rope_type: "yarn", ...rest },
  });
  // 5.x: rope_parameters carries θ; no top-level rope_theta.
  const v5 = configFromHf({
    ...SMALL,
    rope_parameters: { rope_type: "yarn", rope_theta: 50000, ...rest },
  });
  // 5.x as transformers 5 writes it: rope_type and the legacy type side by side.
  const v5both = configFromHf({
    ...SMALL,
    rope_parameters: { rope_type: "yarn", type: "yarn", rope_theta: 50000, ...rest },
  });
  // Both forms at once, consistent.
  const both = configFromHf({
    ...SMALL,
    rope_theta: 50000,
    rope_scaling: YARN,
    rope_parameters: { rope_type: "yarn", rope_theta: 50000, ...rest },
  });
  for (const c of [v4type, v4ropeType, v5, v5both, both]) assert.deepEqual(c.rope_parameters, want);
  // Defaults: no rotary key at all, only θ, rope_scaling null, a 5.x default dict.
  for (
    const extra of [
      {},
      { rope_theta: 10000 },
      { rope_scaling: null },
      { rope_parameters: { rope_type: "default", rope_theta: 10000 } },
    ]
  ) {
    assert.deepEqual(configFromHf({ ...SMALL, ...extra }).rope_parameters, {
      rope_type: "default",
      rope_theta: 10000,
    });
  }
  assert.equal(
    configFromHf({ ...SMALL, rope_parameters: { rope_type: "default", rope_theta: 7 } })
      .rope_parameters.rope_theta,
    7,
  );
  // YaRN defaults as transformers resolves them: beta 32 / 1, original = max positions,
  // truncate true; beta 0 also means the default (HF: `beta_fast or 32`).
  const bare = configFromHf({ ...SMALL, rope_scaling: { type: "yarn", factor: 1, beta_fast: 0 } });
  assert.deepEqual(bare.rope_parameters, {
    rope_type: "yarn",
    rope_theta: 10000,
    factor: 1,
    original_max_position_embeddings: 256,
    beta_fast: 32,
    beta_slow: 1,
    mscale: null,
    mscale_all_dim: null,
    attention_factor: null,
    truncate: true,
  });
});

Deno.test("configFromHf: rotary keys the two transformers versions would read differently are errors", () => {
  const { type: _t, ...rest } = YARN;
  // 4.x ignores rope_parameters: θ 10000 / no scaling vs 5.x's YaRN.
  rejects(
    () =>
      configFromHf({
        ...SMALL,
        rope_scaling: null,
        rope_parameters: { rope_type: "yarn", rope_theta: 50000, ...rest },
      }),
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
  );
  // θ in the 5.x dict differs from the top-level one.
  rejects(
    () =>
      configFromHf({
        ...SMALL,
        rope_theta: 10000,
        rope_parameters: { rope_type: "default", rope_theta: 50000 },
      }),
    "rope_parameters",
  );
  // 4.x ignores a θ inside rope_scaling; 5.x uses it.
  rejects(
    () => configFromHf({ ...SMALL, rope_theta: 10000, rope_scaling: { ...YARN, rope_theta: 5 } }),
    "rope_scaling",
  );
  // factor ≠ max_position_embeddings / original_max_position_embeddings: 4.x uses the ratio.
  rejects(
    () => configFromHf({ ...SMALL, rope_scaling: { ...YARN, factor: 8 } }),
    "factor 8",
    "max_position_embeddings",
  );
  rejects(
    () => configFromHf({ ...SMALL, rope_scaling: { ...YARN, rope_type: "linear" } }),
    "rope_scaling.rope_type",
    "disagree",
  );
});

Deno.test("configFromHf: every unknown key and unimplemented value is an error naming the key", () => {
  const cases: [Record<string, unknown>, string[]][] = [
    [{ sliding_window: 4096 }, ['"sliding_window"']],
    [{ qk_layernorm: true, foo: 1 }, ['"qk_layernorm"', '"foo"']],
    [{ topk_method: "greedy" }, ["topk_method", "greedy"]],
    [{ scoring_func: "softmax" }, ["scoring_func", "softmax"]],
    [{ hidden_act: "gelu" }, ["hidden_act", "gelu"]],
    [{ rope_scaling: { type: "linear", factor: 2 } }, ["rope_scaling.rope_type", "linear"]],
    [{ rope_scaling: { type: "dynamic", factor: 2 } }, ["rope_scaling.rope_type", "dynamic"]],
    [{ rope_scaling: { rope_type: "llama3", factor: 8 } }, ["rope_scaling.rope_type", "llama3"]],
    [{ rope_parameters: { rope_type: "longrope" } }, ["rope_parameters.rope_type", "longrope"]],
    [{ rope_scaling: { ...YARN, low_freq_factor: 1 } }, ["rope_scaling.low_freq_factor"]],
    [{ rope_scaling: { type: "yarn" } }, ["rope_scaling.factor"]],
    [{ rope_scaling: {} }, ["rope_scaling"]],
    [{ rope_parameters: { rope_type: "default", partial_rotary_factor: 0.5 } }, [
      "rope_parameters.partial_rotary_factor",
    ]],
    [{ rope_interleave: 0 }, ["rope_interleave"]],
    [{ attention_dropout: 0.1 }, ["attention_dropout"]],
    [{ tie_word_embeddings: true }, ["tie_word_embeddings"]],
    [{ pad_token_id: 0 }, ["pad_token_id"]],
    [{ moe_layer_freq: 2 }, ["moe_layer_freq"]],
    [{ aux_loss_alpha: 0.001, seq_aux: false }, ["seq_aux"]],
    [{ architectures: ["LlamaForCausalLM"] }, ["architectures"]],
    [{ model_type: "llama" }, ["model_type"]],
    [{ head_dim: 12 }, ["head_dim"]],
    [{ qk_head_dim: 13 }, ["qk_head_dim"]],
    [{ hidden_size: "32" }, ["hidden_size"]],
    [{ num_key_value_heads: 1 }, ["num_key_value_heads"]],
    [{ n_group: 3 }, ["n_group"]],
    [{ topk_group: 5 }, ["topk_group"]],
    [{ eos_token_id: [] }, ["eos_token_id"]],
  ];
  for (const [patch, fragments] of cases) {
    rejects(() => configFromHf({ ...SMALL, ...patch }), ...fragments);
  }
  rejects(() => configFromHf([1, 2]), "config.json object");
});

Deno.test("configFromHf: harmless metadata is accepted and kept verbatim in hf_metadata", () => {
  const meta = {
    architectures: ["DeepseekV3ForCausalLM"],
    model_type: "kimi_k2",
    torch_dtype: "bfloat16",
    transformers_version: "4.48.3",
    auto_map: { AutoConfig: "configuration_deepseek.DeepseekV3Config" },
    use_cache: true,
    pretraining_tp: 1,
    ep_size: 1,
    seq_aux: true,
    moe_layer_freq: 1,
    quantization_config: { quant_method: "fp8", weight_block_size: [128, 128] },
  };
  const c = configFromHf({ ...SMALL, ...meta, num_nextn_predict_layers: 1, head_dim: 4 });
  assert.deepEqual(c.hf_metadata, meta);
  assert.equal(c.num_nextn_predict_layers, 1);
  for (const k of Object.keys(meta)) assert.equal(HF_KEYS[k], "metadata", k);
  // 5.x spells the dtype "dtype".
  assert.deepEqual(configFromHf({ ...SMALL, dtype: "bfloat16" }).hf_metadata, {
    dtype: "bfloat16",
  });
});

Deno.test("toHfConfig: configFromHf(toHfConfig(c)) = c; 4.x-only and 5.x-only readings agree", () => {
  const yarn = configFromHf({
    ...SMALL,
    rope_theta: 50000,
    rope_scaling: { ...YARN, truncate: false, attention_factor: 0.5 },
    attention_bias: true,
    aux_loss_alpha: 0.01,
    eos_token_id: [1, 2],
    rope_interleave: false,
    ...{ use_cache: true, auto_map: { AutoConfig: "x" }, quantization_config: { q: 1 } },
  });
  // rope_interleave false (half-split pairs) is read, kept and written back.
  assert.equal(yarn.rope_interleave, false);
  assert.equal(toHfConfig(yarn).rope_interleave, false);
  assert.equal(configFromHf(SMALL).rope_interleave, true);
  for (const c of [makeConfig("tiny"), makeConfig("kimi-k2"), yarn, configFromHf({})]) {
    const hf = toHfConfig(c);
    assert.equal(hf.model_type, "deepseek_v3");
    assert.deepEqual(hf.architectures, ["DeepseekV3ForCausalLM"]);
    // JSON round trip, as a file would be.
    const back = configFromHf(JSON.parse(JSON.stringify(hf)));
    const strip = (x: KimiConfig) => ({ ...x, hf_metadata: {}, num_nextn_predict_layers: 0 });
    assert.deepEqual(strip(back), strip(c));
    // transformers 4.x reads rope_theta + rope_scaling only; 5.x reads rope_parameters (and
    // rope_scaling when non-null): each alone gives the same rotary parameters.
    const { rope_parameters: _p, ...only4 } = hf;
    const { rope_theta: _t, rope_scaling: _s, ...only5 } = hf;
    assert.deepEqual(ropeFromHf(only4, c.max_position_embeddings), c.rope_parameters);
    assert.deepEqual(ropeFromHf(only5, c.max_position_embeddings), c.rope_parameters);
  }
  const hf = toHfConfig(yarn);
  // Remote code, quantization and MTP do not describe a moongrad checkpoint: not written.
  for (const k of ["auto_map", "quantization_config", "num_nextn_predict_layers"]) {
    assert.equal(k in hf, false, k);
  }
  assert.equal(hf.use_cache, true);
  assert.deepEqual(hf.rope_scaling, {
    type: "yarn",
    rope_type: "yarn",
    factor: 4,
    original_max_position_embeddings: 64,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
    attention_factor: 0.5,
    truncate: false,
  });
});

Deno.test("presets and partial configs keep working; makeConfig fills from tiny, documented", () => {
  const tiny = makeConfig("tiny");
  assert.equal(tiny.hidden_size, 128);
  assert.deepEqual(tiny.rope_parameters, { rope_type: "default", rope_theta: 10000 });
  const part = makeConfig({ hidden_size: 64 });
  assert.equal(part.hidden_size, 64);
  assert.equal(part.vocab_size, PRESETS.tiny.vocab_size);
  const k2 = makeConfig("kimi-k2");
  assert.equal(k2.rope_parameters.rope_type, "yarn");
  rejects(() => makeConfig("gpt" as "tiny"), "unknown preset");
  rejects(() => makeConfig({ n_group: 3 }), "n_group 3");
});

Deno.test("loadConfig reads a config.json file or a directory, naming the file in errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...SMALL, foo: 1 }));
    let err = "";
    try {
      await loadConfig(dir);
    } catch (e) {
      err = (e as Error).message;
    }
    assert.match(err, /loadConfig.*config\.json.*"foo"/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(SMALL));
    assert.equal((await loadConfig(dir)).hidden_size, 32);
    assert.equal((await loadConfig(`${dir}/config.json`)).n_group, 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
