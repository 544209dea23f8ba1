/**
 * The trainer's model shape: the tiny preset, or an HF-style config.json (`--config FILE`,
 * DeepseekV3 keys, parsed by nn/hf_config.ts), with the shape flags laid over it (`--dim`,
 * `--layers`, `--heads`, `--experts`, `--qk-nope-dim`, `--qk-rope-dim`), and the tokenizer's
 * vocabulary size. A shape that nn/config.ts rejects is a CliError naming the flags.
 */
import { type KimiConfig, makeConfig, type PRESETS, validateConfig } from "../nn/config.ts";
import { configFromHf, loadConfig } from "../nn/hf_config.ts";
import { CliError } from "./errors.ts";

/** The shape flags and the config keys they set (null: not given, the base config's value). */
export interface ShapeSettings {
  /** `--config FILE`: an HF DeepseekV3 config.json (null: the preset). */
  config?: string | null;
  /** `--dim`: hidden_size. */
  dim?: number | null;
  /** `--layers`: num_hidden_layers. */
  layers?: number | null;
  /** `--heads`: num_attention_heads (= num_key_value_heads). */
  heads?: number | null;
  /** `--experts`: n_routed_experts. */
  experts?: number | null;
  /** `--qk-nope-dim`: qk_nope_head_dim. */
  qkNopeDim?: number | null;
  /** `--qk-rope-dim`: qk_rope_head_dim. */
  qkRopeDim?: number | null;
}

/** True when any shape flag or `--config` is set. */
export function hasShape(s: ShapeSettings): boolean {
  return [s.config, s.dim, s.layers, s.heads, s.experts, s.qkNopeDim, s.qkRopeDim].some((v) =>
    v !== undefined && v !== null
  );
}

/** The config of `preset` (or `s.config`) with the shape flags and `vocabSize` applied. */
export async function resolveModelConfig(
  preset: string,
  s: ShapeSettings,
  vocabSize: number,
): Promise<KimiConfig> {
  let base: KimiConfig;
  if (s.config) {
    try {
      base = await loadConfig(s.config);
    } catch (e) {
      throw new CliError(`--config ${s.config}: ${(e as Error).message}`);
    }
  } else {
    base = makeConfig(preset as keyof typeof PRESETS);
  }
  const cfg: KimiConfig = { ...base, vocab_size: vocabSize };
  if (s.dim) cfg.hidden_size = s.dim;
  if (s.layers) {
    cfg.num_hidden_layers = s.layers;
    cfg.first_k_dense_replace = Math.min(cfg.first_k_dense_replace, s.layers);
  }
  if (s.heads) cfg.num_attention_heads = cfg.num_key_value_heads = s.heads;
  if (s.experts) {
    cfg.n_routed_experts = s.experts;
    cfg.num_experts_per_tok = Math.min(cfg.num_experts_per_tok, s.experts);
  }
  if (s.qkNopeDim) cfg.qk_nope_head_dim = s.qkNopeDim;
  if (s.qkRopeDim) cfg.qk_rope_head_dim = s.qkRopeDim;
  try {
    validateConfig(cfg);
  } catch (e) {
    throw new CliError(`the model shape is not valid: ${(e as Error).message}`);
  }
  return cfg;
}

/** A config.json as read by `configFromHf` (for a run.json's stored config). */
export function configFromRun(json: Record<string, unknown>): KimiConfig {
  return configFromHf(json);
}
