/**
 * Model configuration: the typed `KimiConfig` (Hugging Face `DeepseekV3Config` key names, as
 * in config.json), its presets and its validation. Reading and writing config.json files with
 * transformers' semantics lives in nn/hf_config.ts.
 *
 * Two ways to get a config, with different defaults for absent keys:
 * - `makeConfig("tiny" | "kimi-k2")` or `makeConfig(partial)`: a moongrad preset, or a partial
 *   object laid over the `tiny` preset (a convenience for tests and experiments);
 * - `configFromHf(json)` / `loadConfig(path)` (nn/hf_config.ts): a config.json read exactly as
 *   transformers' `DeepseekV3Config` would, absent keys taking HF's defaults.
 */
import { MoongradError } from "../core/errors.ts";

/**
 * Rotary embedding parameters, normalised from transformers 4.x (`rope_theta` + `rope_scaling`)
 * and 5.x (`rope_parameters`) config files. This is what the RoPE code reads
 * (`rotaryFrequencies` and `softmaxScaleFactor` in nn/rope.ts): both types run.
 *
 * @example Read the rotary parameters of a config
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const rope: mg.nn.RopeParameters = mg.nn.makeConfig("kimi-k2").rope_parameters;
 * console.log(rope.rope_type, rope.rope_theta); // yarn 50000
 * ```
 */
export type RopeParameters = DefaultRope | YarnRope;

/**
 * Plain RoPE: inv_freq_i = rope_theta^(−2i/d).
 *
 * @example Plain RoPE with base 10000
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const rope: mg.nn.DefaultRope = { rope_type: "default", rope_theta: 10000 };
 * const config = mg.nn.makeConfig({ rope_parameters: rope });
 * console.log(new mg.nn.MultiHeadLatentAttention(config).softmaxScale === 1 / Math.sqrt(24)); // true
 * ```
 */
export interface DefaultRope {
  /** "default". */
  rope_type: "default";
  /** Base θ. */
  rope_theta: number;
}

/**
 * YaRN (HF `_compute_yarn_parameters`), every field resolved the way transformers resolves it
 * (absent beta_fast → 32, beta_slow → 1, truncate → true, original_max_position_embeddings →
 * max_position_embeddings). `mscale`, `mscale_all_dim` and `attention_factor` stay null when
 * absent, because HF derives values from their absence (null and 0 behave alike for the two
 * mscales). Validation requires factor = max_position_embeddings /
 * original_max_position_embeddings, the one case where transformers 4.x (which recomputes the
 * factor from that ratio) and 5.x (which uses `factor`) agree.
 *
 * @example K2's YaRN: ×32 from 4096 positions
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const rope = mg.nn.makeConfig("kimi-k2").rope_parameters as mg.nn.YarnRope;
 * console.log(rope.factor, rope.original_max_position_embeddings, rope.beta_fast); // 32 4096 1
 * ```
 */
export interface YarnRope {
  /** "yarn". */
  rope_type: "yarn";
  /** Base θ. */
  rope_theta: number;
  /** Context extension factor s (≥ 1). */
  factor: number;
  /** The pre-extension context length L. */
  original_max_position_embeddings: number;
  /** High-frequency boundary in rotations (HF default 32). */
  beta_fast: number;
  /** Low-frequency boundary in rotations (HF default 1). */
  beta_slow: number;
  /** mscale of the cos/sin attention factor, or null (absent). */
  mscale: number | null;
  /** mscale_all_dim: also scales the softmax (by yarn_get_mscale(factor, it)²), or null. */
  mscale_all_dim: number | null;
  /** An explicit cos/sin attention factor, or null (derived from factor and the mscales). */
  attention_factor: number | null;
  /** Round the correction range to whole dimensions (HF default true). */
  truncate: boolean;
}

/**
 * The HF `DeepseekV3Config` fields moongrad reads (snake_case, as in config.json).
 *
 * @example A small config with Hugging Face key names
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config: mg.nn.KimiConfig = mg.nn.makeConfig({
 *   hidden_size: 64,
 *   num_hidden_layers: 2,
 *   n_routed_experts: 4,
 *   num_experts_per_tok: 2,
 * });
 * const model = new mg.nn.KimiLM(config, { seed: 0 });
 * console.log(config.first_k_dense_replace, model.moeLayers().length); // 1 1
 * ```
 */
export interface KimiConfig {
  /** Vocabulary size. */
  vocab_size: number;
  /** Model width D. */
  hidden_size: number;
  /** Width of the dense SwiGLU MLP of the first `first_k_dense_replace` layers. */
  intermediate_size: number;
  /** Width of each routed (and shared) expert. */
  moe_intermediate_size: number;
  /** Number of decoder layers (MTP layers excluded). */
  num_hidden_layers: number;
  /** Attention heads H. */
  num_attention_heads: number;
  /** Key/value heads: must equal num_attention_heads (MLA gives every head its own key). */
  num_key_value_heads: number;
  /** Shared experts per MoE layer. */
  n_shared_experts: number;
  /** Routed experts per MoE layer. */
  n_routed_experts: number;
  /** Scale applied to the renormalised top-k weights. */
  routed_scaling_factor: number;
  /** Latent width r_kv of the compressed keys/values. */
  kv_lora_rank: number;
  /** Latent width r_q of the compressed queries, or null for a plain q_proj. */
  q_lora_rank: number | null;
  /** Rotary part of each query/key head, d_r. */
  qk_rope_head_dim: number;
  /** Value head width d_v. */
  v_head_dim: number;
  /** Non-rotary part of each query/key head, d_n. */
  qk_nope_head_dim: number;
  /** Routing method: only "noaux_tc" (sigmoid scores + correction bias, as HF DeepseekV3). */
  topk_method: "noaux_tc";
  /** Expert groups (group-limited routing; 1 in K2, 8 in DeepSeek-V3). */
  n_group: number;
  /** Groups kept per token (1 in K2, 4 in DeepSeek-V3). */
  topk_group: number;
  /** Experts per token K. */
  num_experts_per_tok: number;
  /** Layers below this index use the dense MLP. */
  first_k_dense_replace: number;
  /** Renormalise the selected weights to sum to 1 before scaling. */
  norm_topk_prob: boolean;
  /** Router score function: only "sigmoid". */
  scoring_func: "sigmoid";
  /**
   * Weight α of the sequence-wise auxiliary balance loss (DeepSeek's remote-code key; the
   * transformers model ignores it). 0 disables it; absent from a config.json means 0.
   */
  aux_loss_alpha: number;
  /** Activation: only "silu". */
  hidden_act: "silu";
  /** Longest sequence the rotary embedding is meant for. */
  max_position_embeddings: number;
  /** Std of the normal initialisation. */
  initializer_range: number;
  /** eps of the layer RMSNorms (MLA's inner norms always use 1e-6). */
  rms_norm_eps: number;
  /** Rotary embedding parameters (θ and scaling), see `RopeParameters`. */
  rope_parameters: RopeParameters;
  /**
   * Rotary pair layout: true (HF default, DeepSeek / Kimi weights) rotates interleaved pairs
   * (x0,x1),(x2,x3)…; false rotates half-split pairs (x_i, x_{i+d/2}) (plain `rotate_half`).
   */
  rope_interleave: boolean;
  /** Biases on q_a_proj, kv_a_proj_with_mqa and o_proj (HF DeepseekV3Attention). */
  attention_bias: boolean;
  /** Attention dropout: only 0 (moongrad has no attention dropout). */
  attention_dropout: number;
  /** Share the embedding and LM-head weights: only false. */
  tie_word_embeddings: boolean;
  /** Padding id (HF `padding_idx` of the embedding): only null. */
  pad_token_id: number | null;
  /** Begin-of-sequence token id. */
  bos_token_id: number | null;
  /** End-of-sequence token id(s). */
  eos_token_id: number | number[] | null;
  /**
   * Multi-token-prediction layers a checkpoint may carry after the decoder layers
   * (`model.layers.{num_hidden_layers + i}.*`): not built, not counted, skipped on load (as
   * transformers does).
   */
  num_nextn_predict_layers: number;
  /**
   * Keys of the config.json that change nothing moongrad computes, kept verbatim (see
   * nn/hf_config.ts: architectures, model_type, torch_dtype, transformers_version, auto_map,
   * use_cache, pretraining_tp, ep_size, moe_layer_freq, seq_aux, quantization_config, ...).
   */
  hf_metadata: Readonly<Record<string, unknown>>;
}

/** Fields of every preset unless it says otherwise. */
const BASE = {
  n_shared_experts: 1,
  routed_scaling_factor: 2.5,
  topk_method: "noaux_tc",
  n_group: 1,
  topk_group: 1,
  first_k_dense_replace: 1,
  norm_topk_prob: true,
  scoring_func: "sigmoid",
  aux_loss_alpha: 0,
  hidden_act: "silu",
  max_position_embeddings: 4096,
  initializer_range: 0.02,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_type: "default", rope_theta: 10000 },
  rope_interleave: true,
  attention_bias: false,
  attention_dropout: 0,
  tie_word_embeddings: false,
  pad_token_id: null,
  bos_token_id: 0,
  eos_token_id: 0,
  num_nextn_predict_layers: 0,
  hf_metadata: {},
} as const satisfies Partial<KimiConfig>;

/**
 * Named presets: `tiny` fits a CPU adapter; `kimi-k2` is the architecture of Kimi K2's
 * config.json (moonshotai/Kimi-K2-Instruct: YaRN ×32 from 4096 positions, θ = 50000), for
 * shapes and counts only: never allocate it.
 *
 * @example The shipped presets
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const k2 = mg.nn.PRESETS["kimi-k2"];
 * console.log(k2.num_hidden_layers, k2.n_routed_experts, k2.num_experts_per_tok); // 61 384 8
 * console.log(mg.nn.parameterCounts(mg.nn.PRESETS.tiny).total); // 1670272
 * ```
 */
export const PRESETS: Readonly<Record<"tiny" | "kimi-k2", Readonly<KimiConfig>>> = {
  tiny: {
    ...BASE,
    vocab_size: 256,
    hidden_size: 128,
    intermediate_size: 384,
    moe_intermediate_size: 128,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    n_routed_experts: 8,
    num_experts_per_tok: 2,
    kv_lora_rank: 32,
    q_lora_rank: 64,
    qk_rope_head_dim: 8,
    v_head_dim: 16,
    qk_nope_head_dim: 16,
    max_position_embeddings: 1024,
  },
  "kimi-k2": {
    ...BASE,
    vocab_size: 163840,
    hidden_size: 7168,
    intermediate_size: 18432,
    moe_intermediate_size: 2048,
    num_hidden_layers: 61,
    num_attention_heads: 64,
    num_key_value_heads: 64,
    n_routed_experts: 384,
    num_experts_per_tok: 8,
    kv_lora_rank: 512,
    q_lora_rank: 1536,
    qk_rope_head_dim: 64,
    v_head_dim: 128,
    qk_nope_head_dim: 128,
    routed_scaling_factor: 2.827,
    aux_loss_alpha: 0.001,
    max_position_embeddings: 131072,
    rope_parameters: {
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
    },
    bos_token_id: 163584,
    eos_token_id: 163585,
  },
};

/**
 * A full, validated config from a preset name, or from a partial config laid over the `tiny`
 * preset (keys absent from the partial object keep tiny's values, not HF's defaults; read
 * config.json files with `configFromHf` / `loadConfig` instead).
 * @example
 * ```ts
 * const cfg = makeConfig({ hidden_size: 64, num_hidden_layers: 2 }); // the rest from "tiny"
 * ```
 */
export function makeConfig(base: keyof typeof PRESETS | Partial<KimiConfig> = "tiny"): KimiConfig {
  if (typeof base === "object" && base !== null) {
    // A key moongrad does not know is a mistake (often an HF config.json key such as
    // `rope_theta`, which KimiConfig keeps in rope_parameters): refuse it, never drop it.
    const unknown = Object.keys(base).filter((k) => !(k in PRESETS.tiny));
    if (unknown.length) {
      throw new MoongradError(
        "makeConfig",
        `unknown config key(s) ${unknown.join(", ")}` +
          (unknown.includes("rope_theta") ? " (θ goes in rope_parameters.rope_theta)" : "") +
          `; read an HF config.json with configFromHf / loadConfig instead`,
      );
    }
  }
  const cfg: KimiConfig = typeof base === "string"
    ? { ...presetOrThrow(base) }
    : { ...PRESETS.tiny, ...base };
  validateConfig(cfg);
  return cfg;
}

function presetOrThrow(name: string): KimiConfig {
  const p = (PRESETS as Record<string, KimiConfig>)[name];
  if (!p) {
    throw new MoongradError(
      "makeConfig",
      `unknown preset "${name}"; expected one of ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  return p;
}

const isPosInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
const isFiniteNum = (v: unknown) => typeof v === "number" && Number.isFinite(v);

/**
 * The problems of a `rope_parameters` value for a model with `maxPositions` positions (null:
 * skip the check that a YaRN factor equals max_position_embeddings /
 * original_max_position_embeddings).
 *
 * @example Validate rotary parameters without throwing
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.nn.ropeProblems({ rope_type: "default", rope_theta: -1 }, null)); // ["rope_parameters.rope_theta must be a positive number, got -1"]
 * ```
 */
export function ropeProblems(rope: RopeParameters, maxPositions: number | null): string[] {
  const p: string[] = [];
  if (rope === null || typeof rope !== "object") return ["rope_parameters must be an object"];
  if (!isFiniteNum(rope.rope_theta) || rope.rope_theta <= 0) {
    p.push(`rope_parameters.rope_theta must be a positive number, got ${rope.rope_theta}`);
  }
  if (rope.rope_type === "default") return p;
  if (rope.rope_type !== "yarn") {
    return [
      ...p,
      `rope_parameters.rope_type "${(rope as { rope_type: unknown }).rope_type}" is not ` +
      `implemented (expected "default" or "yarn")`,
    ];
  }
  if (!isFiniteNum(rope.factor) || rope.factor < 1) {
    p.push(`rope_parameters.factor must be a number >= 1, got ${rope.factor}`);
  }
  if (!isPosInt(rope.original_max_position_embeddings)) {
    p.push(
      `rope_parameters.original_max_position_embeddings must be a positive integer, got ${rope.original_max_position_embeddings}`,
    );
  } else if (
    maxPositions !== null && rope.factor !== maxPositions / rope.original_max_position_embeddings
  ) {
    p.push(
      `rope_parameters.factor ${rope.factor} differs from max_position_embeddings / ` +
        `original_max_position_embeddings = ${maxPositions} / ${rope.original_max_position_embeddings}` +
        ` = ${
          maxPositions / rope.original_max_position_embeddings
        }: transformers 4.x uses that ratio` +
        ` as the YaRN factor and 5.x uses factor, so the model would differ between versions`,
    );
  }
  for (const k of ["beta_fast", "beta_slow"] as const) {
    if (!isFiniteNum(rope[k]) || rope[k] <= 0) {
      p.push(`rope_parameters.${k} must be a positive number, got ${rope[k]}`);
    }
  }
  for (const k of ["mscale", "mscale_all_dim", "attention_factor"] as const) {
    if (rope[k] !== null && !isFiniteNum(rope[k])) {
      p.push(`rope_parameters.${k} must be a number or null, got ${rope[k]}`);
    }
  }
  if (rope.attention_factor !== null && rope.attention_factor < 0) {
    p.push(`rope_parameters.attention_factor must be >= 0, got ${rope.attention_factor}`);
  }
  if (typeof rope.truncate !== "boolean") {
    p.push(`rope_parameters.truncate must be a boolean, got ${rope.truncate}`);
  }
  return p;
}

/**
 * Throws one MoongradError listing every invalid or unsupported field of a config (each
 * named by its config.json key).
 * @example
 * ```ts
 * validateConfig(makeConfig("tiny")); // passes
 * ```
 */
export function validateConfig(cfg: KimiConfig): void {
  const problems: string[] = [];
  const positive = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "n_routed_experts",
    "num_experts_per_tok",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "v_head_dim",
    "qk_nope_head_dim",
    "n_group",
    "topk_group",
    "max_position_embeddings",
  ] as const;
  for (const k of positive) {
    if (!isPosInt(cfg[k])) problems.push(`${k} must be a positive integer, got ${cfg[k]}`);
  }
  for (
    const k of ["first_k_dense_replace", "n_shared_experts", "num_nextn_predict_layers"] as const
  ) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 0) {
      problems.push(`${k} must be a non-negative integer, got ${cfg[k]}`);
    }
  }
  if (cfg.q_lora_rank !== null && !isPosInt(cfg.q_lora_rank)) {
    problems.push(`q_lora_rank must be a positive integer or null, got ${cfg.q_lora_rank}`);
  }
  if (cfg.qk_rope_head_dim % 2 !== 0) {
    problems.push(`qk_rope_head_dim must be even (rotary pairs), got ${cfg.qk_rope_head_dim}`);
  }
  if (cfg.num_key_value_heads !== cfg.num_attention_heads) {
    problems.push(
      `num_key_value_heads ${cfg.num_key_value_heads} must equal num_attention_heads ` +
        `${cfg.num_attention_heads} (MLA expands one key/value per head)`,
    );
  }
  if (cfg.num_experts_per_tok > cfg.n_routed_experts) {
    problems.push(
      `num_experts_per_tok ${cfg.num_experts_per_tok} exceeds n_routed_experts ${cfg.n_routed_experts}`,
    );
  }
  if (isPosInt(cfg.n_group) && isPosInt(cfg.n_routed_experts)) {
    if (cfg.n_routed_experts % cfg.n_group !== 0) {
      problems.push(
        `n_group ${cfg.n_group} must divide n_routed_experts ${cfg.n_routed_experts}`,
      );
    } else if (cfg.n_group > 1 && cfg.n_routed_experts / cfg.n_group < 2) {
      problems.push(
        `n_routed_experts / n_group must be >= 2 (a group's score is its top-2 sum), got ` +
          `${cfg.n_routed_experts} / ${cfg.n_group}`,
      );
    }
    if (cfg.topk_group > cfg.n_group) {
      problems.push(`topk_group ${cfg.topk_group} exceeds n_group ${cfg.n_group}`);
    }
  }
  if (cfg.topk_method !== "noaux_tc") {
    problems.push(`topk_method "${cfg.topk_method}" is not supported (expected "noaux_tc")`);
  }
  if (cfg.scoring_func !== "sigmoid") {
    problems.push(`scoring_func "${cfg.scoring_func}" is not supported (expected "sigmoid")`);
  }
  if (cfg.hidden_act !== "silu") {
    problems.push(`hidden_act "${cfg.hidden_act}" is not supported (expected "silu")`);
  }
  for (const k of ["routed_scaling_factor", "initializer_range", "rms_norm_eps"] as const) {
    if (!isFiniteNum(cfg[k])) problems.push(`${k} must be a finite number, got ${cfg[k]}`);
  }
  if (!(cfg.rms_norm_eps > 0)) problems.push(`rms_norm_eps must be > 0, got ${cfg.rms_norm_eps}`);
  if (!(cfg.aux_loss_alpha >= 0)) {
    problems.push(`aux_loss_alpha must be >= 0, got ${cfg.aux_loss_alpha}`);
  }
  for (const k of ["norm_topk_prob", "attention_bias", "rope_interleave"] as const) {
    if (typeof cfg[k] !== "boolean") problems.push(`${k} must be a boolean, got ${cfg[k]}`);
  }
  if (cfg.attention_dropout !== 0) {
    problems.push(`attention_dropout ${cfg.attention_dropout} is not supported (expected 0)`);
  }
  if (cfg.tie_word_embeddings !== false) problems.push("tie_word_embeddings is not supported");
  if (cfg.pad_token_id !== null) {
    problems.push(
      `pad_token_id ${cfg.pad_token_id} is not supported: HF makes it the embedding's ` +
        "padding_idx (a row with zero gradient), which moongrad does not implement; use null",
    );
  }
  problems.push(...ropeProblems(cfg.rope_parameters, cfg.max_position_embeddings));
  if (problems.length) {
    throw new MoongradError("config", `invalid config:\n  ${problems.join("\n  ")}`);
  }
}

/**
 * Throws unless the model's layers can run `config`'s rotary embedding: `rope_type` "default"
 * or "yarn" (both implemented, nn/rope.ts), with valid parameters. Kept as the one place a
 * future unimplemented rope type would be refused before anything is allocated.
 *
 * @example Refuse a config before allocating anything
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const config = mg.nn.makeConfig("tiny");
 * mg.nn.requireRunnableRope("myLayer", config); // passes: plain RoPE runs
 * ```
 */
export function requireRunnableRope(op: string, config: KimiConfig): void {
  const r = config.rope_parameters;
  const problems = ropeProblems(r, config.max_position_embeddings);
  if (r.rope_type !== "default" && r.rope_type !== "yarn") {
    problems.unshift(`rope_type "${(r as { rope_type: unknown }).rope_type}" cannot run`);
  }
  if (problems.length) {
    throw new MoongradError(op, `rope_scaling / rope_parameters: ${problems.join("; ")}`);
  }
}
