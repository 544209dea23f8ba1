/**
 * Model configuration with Hugging Face `DeepseekV3Config` key names, so a `config.json`
 * written here loads in `transformers` unchanged, and presets for a CPU-sized model and the
 * real Kimi K2 shape.
 */
import { MoongradError } from "../core/errors.ts";

/** The subset of HF `DeepseekV3Config` moongrad reads (snake_case, as in config.json). */
export interface KimiConfig {
  /** Vocabulary size. */
  vocab_size: number;
  /** Model width D. */
  hidden_size: number;
  /** Width of the dense SwiGLU MLP of the first `first_k_dense_replace` layers. */
  intermediate_size: number;
  /** Width of each routed (and shared) expert. */
  moe_intermediate_size: number;
  /** Number of decoder layers. */
  num_hidden_layers: number;
  /** Attention heads H. */
  num_attention_heads: number;
  /** Key/value heads (HF keeps it equal to num_attention_heads for MLA). */
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
  /** Routing method: "noaux_tc" (sigmoid scores + correction bias). */
  topk_method: string;
  /** Expert groups (1 in K2). */
  n_group: number;
  /** Groups kept per token (1 in K2). */
  topk_group: number;
  /** Experts per token K. */
  num_experts_per_tok: number;
  /** Layers below this index use the dense MLP. */
  first_k_dense_replace: number;
  /** Renormalise the selected weights to sum to 1 before scaling. */
  norm_topk_prob: boolean;
  /** Router score function ("sigmoid"). */
  scoring_func: string;
  /** Sequence-wise auxiliary loss weight α (0 disables it). */
  aux_loss_alpha: number;
  /** Activation ("silu"). */
  hidden_act: string;
  /** Longest sequence the rotary table is meant for. */
  max_position_embeddings: number;
  /** Std of the normal initialisation. */
  initializer_range: number;
  /** eps of the layer RMSNorms (MLA's inner norms always use 1e-6). */
  rms_norm_eps: number;
  /** Rotary base θ. */
  rope_theta: number;
  /** Rotary scaling (YaRN) parameters, or null. */
  rope_scaling: Record<string, unknown> | null;
  /** Biases on the attention projections (false in DeepSeek-V3/K2). */
  attention_bias: boolean;
  /** Share the embedding and LM-head weights (false in DeepSeek-V3/K2). */
  tie_word_embeddings: boolean;
  /** Begin-of-sequence token id. */
  bos_token_id: number;
  /** End-of-sequence token id. */
  eos_token_id: number;
}

const BASE: Omit<
  KimiConfig,
  | "vocab_size"
  | "hidden_size"
  | "intermediate_size"
  | "moe_intermediate_size"
  | "num_hidden_layers"
  | "num_attention_heads"
  | "num_key_value_heads"
  | "n_routed_experts"
  | "kv_lora_rank"
  | "q_lora_rank"
  | "qk_rope_head_dim"
  | "v_head_dim"
  | "qk_nope_head_dim"
  | "num_experts_per_tok"
> = {
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
  rope_theta: 10000,
  rope_scaling: null,
  attention_bias: false,
  tie_word_embeddings: false,
  bos_token_id: 0,
  eos_token_id: 0,
};

/** Named presets: `tiny` fits a CPU adapter; `kimi-k2` is the real shape (never allocate it). */
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
    rope_theta: 50000,
    max_position_embeddings: 131072,
    bos_token_id: 163584,
    eos_token_id: 163585,
  },
};

/** A full config from a preset name or a partial config over the `tiny` preset; validated. */
export function makeConfig(base: keyof typeof PRESETS | Partial<KimiConfig> = "tiny"): KimiConfig {
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

/** Throws a MoongradError listing every invalid field of a config. */
export function validateConfig(cfg: KimiConfig): void {
  const problems: string[] = [];
  const positive = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "n_routed_experts",
    "num_experts_per_tok",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "v_head_dim",
    "qk_nope_head_dim",
  ] as const;
  for (const k of positive) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) {
      problems.push(`${k} must be a positive integer, got ${cfg[k]}`);
    }
  }
  if (cfg.q_lora_rank !== null && (!Number.isInteger(cfg.q_lora_rank) || cfg.q_lora_rank <= 0)) {
    problems.push(`q_lora_rank must be a positive integer or null, got ${cfg.q_lora_rank}`);
  }
  if (cfg.qk_rope_head_dim % 2 !== 0) {
    problems.push(`qk_rope_head_dim must be even (rotary pairs), got ${cfg.qk_rope_head_dim}`);
  }
  if (cfg.num_experts_per_tok > cfg.n_routed_experts) {
    problems.push(
      `num_experts_per_tok ${cfg.num_experts_per_tok} exceeds n_routed_experts ${cfg.n_routed_experts}`,
    );
  }
  if (!Number.isInteger(cfg.n_shared_experts) || cfg.n_shared_experts < 0) {
    problems.push(`n_shared_experts must be a non-negative integer, got ${cfg.n_shared_experts}`);
  }
  if (cfg.scoring_func !== "sigmoid") {
    problems.push(`scoring_func "${cfg.scoring_func}" is not supported (expected "sigmoid")`);
  }
  if (cfg.n_group !== 1 || cfg.topk_group !== 1) {
    problems.push(
      `group-limited routing is not implemented: n_group and topk_group must be 1 (K2's setting)`,
    );
  }
  if (cfg.hidden_act !== "silu") {
    problems.push(`hidden_act "${cfg.hidden_act}" is not supported (expected "silu")`);
  }
  if (cfg.tie_word_embeddings) problems.push("tie_word_embeddings is not supported");
  if (cfg.rope_scaling !== null) problems.push("rope_scaling (YaRN) is not implemented; use null");
  if (problems.length) {
    throw new MoongradError("config", `invalid config:\n  ${problems.join("\n  ")}`);
  }
}

/** The config in HF `config.json` form (architectures, model_type and the fields above). */
export function toHfConfig(cfg: KimiConfig): Record<string, unknown> {
  return {
    architectures: ["DeepseekV3ForCausalLM"],
    model_type: "deepseek_v3",
    torch_dtype: "float32",
    ...cfg,
  };
}
