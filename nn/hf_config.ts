/**
 * config.json with Hugging Face semantics: `configFromHf` reads a config exactly as
 * transformers' `DeepseekV3Config` would (HF defaults for absent keys, both the 4.x
 * `rope_theta` / `rope_scaling` and the 5.x `rope_parameters` forms), and `toHfConfig` writes
 * one that transformers 4.x and 5.x read the same way. Every key is either used, accepted as
 * metadata (kept in `hf_metadata`), or an error naming it: nothing is dropped silently.
 *
 * Keys (see `HF_KEYS` for the full table):
 * - architecture fields (vocab_size … rope_interleave): read into `KimiConfig`, HF default when
 *   absent (`HF_DEFAULTS`, transformers' `DeepseekV3Config.__init__`);
 * - DeepSeek remote-code routing keys: `topk_method` (only "noaux_tc"), `scoring_func` (only
 *   "sigmoid"), `aux_loss_alpha` (moongrad's sequence-wise aux loss weight; absent = 0),
 *   `seq_aux` (must be true when aux_loss_alpha > 0), `moe_layer_freq` (only 1),
 *   `num_nextn_predict_layers` (MTP layers: not built, not counted, skipped on load);
 * - metadata kept verbatim in `hf_metadata`: architectures (must name DeepseekV3ForCausalLM),
 *   model_type ("deepseek_v3" or "kimi_k2"), torch_dtype / dtype, transformers_version,
 *   auto_map, use_cache, pretraining_tp, ep_size, seq_aux, moe_layer_freq,
 *   quantization_config (describes the checkpoint's storage; loading a quantized checkpoint is
 *   refused), _name_or_path;
 * - derived keys transformers writes (`qk_head_dim`, `head_dim`): checked against the sizes.
 */
import { MoongradError } from "../core/errors.ts";
import { type KimiConfig, type RopeParameters, validateConfig } from "./config.ts";

/**
 * transformers' `DeepseekV3Config.__init__` defaults, used for keys absent from a file.
 *
 * @example What an absent config.json key means
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.nn.HF_DEFAULTS.vocab_size, mg.nn.HF_DEFAULTS.hidden_size); // 129280 7168
 * console.log(mg.nn.configFromHf({}).vocab_size); // 129280
 * ```
 */
export const HF_DEFAULTS = {
  vocab_size: 129280,
  hidden_size: 7168,
  intermediate_size: 18432,
  moe_intermediate_size: 2048,
  num_hidden_layers: 61,
  num_attention_heads: 128,
  num_key_value_heads: 128,
  n_shared_experts: 1,
  n_routed_experts: 256,
  routed_scaling_factor: 2.5,
  kv_lora_rank: 512,
  q_lora_rank: 1536,
  qk_rope_head_dim: 64,
  v_head_dim: 128,
  qk_nope_head_dim: 128,
  n_group: 8,
  topk_group: 4,
  num_experts_per_tok: 8,
  first_k_dense_replace: 3,
  norm_topk_prob: true,
  hidden_act: "silu",
  max_position_embeddings: 4096,
  initializer_range: 0.02,
  rms_norm_eps: 1e-6,
  pad_token_id: null,
  bos_token_id: 0,
  eos_token_id: 1,
  tie_word_embeddings: false,
  rope_theta: 10000,
  rope_interleave: true,
  attention_bias: false,
  attention_dropout: 0,
} as const;

/** Defaults of the keys DeepSeek's remote code adds (transformers itself has none). */
const REMOTE_DEFAULTS = {
  topk_method: "noaux_tc",
  scoring_func: "sigmoid",
  aux_loss_alpha: 0,
  num_nextn_predict_layers: 0,
} as const;

type Kind = "int" | "int?" | "num" | "bool" | "str" | "ids";

/** Architecture keys read into KimiConfig, with their JSON type. */
const FIELDS: Record<string, Kind> = {
  vocab_size: "int",
  hidden_size: "int",
  intermediate_size: "int",
  moe_intermediate_size: "int",
  num_hidden_layers: "int",
  num_attention_heads: "int",
  num_key_value_heads: "int?",
  n_shared_experts: "int",
  n_routed_experts: "int",
  routed_scaling_factor: "num",
  kv_lora_rank: "int",
  q_lora_rank: "int?",
  qk_rope_head_dim: "int",
  v_head_dim: "int",
  qk_nope_head_dim: "int",
  n_group: "int",
  topk_group: "int",
  num_experts_per_tok: "int",
  first_k_dense_replace: "int",
  norm_topk_prob: "bool",
  hidden_act: "str",
  max_position_embeddings: "int",
  initializer_range: "num",
  rms_norm_eps: "num",
  pad_token_id: "int?",
  bos_token_id: "int?",
  eos_token_id: "ids",
  tie_word_embeddings: "bool",
  rope_interleave: "bool",
  attention_bias: "bool",
  attention_dropout: "num",
  topk_method: "str",
  scoring_func: "str",
  aux_loss_alpha: "num",
  num_nextn_predict_layers: "int",
};

/** Keys that change nothing moongrad computes: kept verbatim in `hf_metadata`. */
const METADATA = [
  "architectures",
  "model_type",
  "torch_dtype",
  "dtype",
  "transformers_version",
  "auto_map",
  "use_cache",
  "pretraining_tp",
  "ep_size",
  "seq_aux",
  "moe_layer_freq",
  "quantization_config",
  "_name_or_path",
] as const;

/** The rotary keys, handled together (see `ropeFromHf`). */
const ROPE_KEYS = ["rope_theta", "rope_scaling", "rope_parameters"] as const;

/** Keys transformers derives and may write: checked against the sizes, not stored. */
const DERIVED = ["qk_head_dim", "head_dim"] as const;

/**
 * What each config.json key means to moongrad: "field" (read into KimiConfig), "rope" (read
 * into `rope_parameters`), "metadata" (kept in `hf_metadata`, changes nothing computed),
 * "derived" (checked, recomputed). Any other key is an error.
 *
 * @example Classify a config.json's keys
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.nn.HF_KEYS.hidden_size, mg.nn.HF_KEYS.rope_scaling, mg.nn.HF_KEYS.torch_dtype); // field rope metadata
 * console.log(mg.nn.HF_KEYS.use_flash_attention); // undefined (an error in configFromHf)
 * ```
 */
export const HF_KEYS: Readonly<Record<string, "field" | "rope" | "metadata" | "derived">> = {
  ...Object.fromEntries(Object.keys(FIELDS).map((k) => [k, "field" as const])),
  ...Object.fromEntries(ROPE_KEYS.map((k) => [k, "rope" as const])),
  ...Object.fromEntries(METADATA.map((k) => [k, "metadata" as const])),
  ...Object.fromEntries(DERIVED.map((k) => [k, "derived" as const])),
};

const MODEL_TYPES = ["deepseek_v3", "kimi_k2"];
const YARN_KEYS = [
  "rope_type",
  "type",
  "rope_theta",
  "factor",
  "original_max_position_embeddings",
  "beta_fast",
  "beta_slow",
  "mscale",
  "mscale_all_dim",
  "attention_factor",
  "truncate",
];

function fail(msg: string): never {
  throw new MoongradError("configFromHf", msg);
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

function checkKind(key: string, v: unknown, kind: Kind): void {
  const int = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x);
  const ok = kind === "int"
    ? int(v)
    : kind === "int?"
    ? v === null || int(v)
    : kind === "num"
    ? typeof v === "number" && Number.isFinite(v)
    : kind === "bool"
    ? typeof v === "boolean"
    : kind === "str"
    ? typeof v === "string"
    : v === null || int(v) || (Array.isArray(v) && v.length > 0 && v.every(int));
  if (!ok) {
    const want = {
      int: "an integer",
      "int?": "an integer or null",
      num: "a finite number",
      bool: "a boolean",
      str: "a string",
      ids: "an integer, a non-empty list of integers, or null",
    }[kind];
    fail(`${key} must be ${want}, got ${JSON.stringify(v)}`);
  }
}

/** A rope dict as one transformers version resolves it; `where` names it in errors. */
function ropeDict(
  d: Record<string, unknown>,
  where: string,
  theta: number,
  maxPositions: number,
): RopeParameters {
  for (const k of Object.keys(d)) {
    if (!YARN_KEYS.includes(k)) {
      fail(`${where}.${k} is not a rotary parameter moongrad implements (expected ${YARN_KEYS})`);
    }
  }
  const t1 = d.rope_type, t2 = d.type;
  if (t1 !== undefined && t2 !== undefined && t1 !== t2) {
    fail(`${where}.rope_type "${t1}" and ${where}.type "${t2}" disagree`);
  }
  const type = t1 ?? t2 ?? "default";
  if (typeof type !== "string") fail(`${where}.rope_type must be a string, got ${type}`);
  if (d.rope_theta !== undefined) {
    if (typeof d.rope_theta !== "number") fail(`${where}.rope_theta must be a number`);
    theta = d.rope_theta;
  }
  if (type === "default") {
    const extra = Object.keys(d).filter((k) => !["rope_type", "type", "rope_theta"].includes(k));
    if (extra.length) fail(`${where}.${extra[0]} is not a parameter of rope_type "default"`);
    return { rope_type: "default", rope_theta: theta };
  }
  if (type !== "yarn") {
    fail(
      `${where}.rope_type "${type}" is not implemented (moongrad reads "default" and "yarn"; ` +
        `linear, dynamic, llama3, longrope and others are errors)`,
    );
  }
  const num = (k: string): number | null => {
    const v = d[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      fail(`${where}.${k} must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const factor = num("factor");
  if (factor === null) fail(`${where}.factor is required for rope_type "yarn"`);
  if (d.truncate !== undefined && typeof d.truncate !== "boolean") {
    fail(`${where}.truncate must be a boolean, got ${JSON.stringify(d.truncate)}`);
  }
  return {
    rope_type: "yarn",
    rope_theta: theta,
    factor,
    original_max_position_embeddings: num("original_max_position_embeddings") ?? maxPositions,
    // transformers: `beta_fast or 32`, `beta_slow or 1` (0 and null take the default too)
    beta_fast: num("beta_fast") || 32,
    beta_slow: num("beta_slow") || 1,
    mscale: num("mscale"),
    mscale_all_dim: num("mscale_all_dim"),
    attention_factor: num("attention_factor"),
    truncate: (d.truncate as boolean | undefined) ?? true,
  };
}

/**
 * The rotary parameters of a config.json as transformers resolves them:
 * - 4.x reads `rope_theta` (default 10000) and `rope_scaling` (null, or a dict whose `type` or
 *   `rope_type` names the method) and ignores `rope_parameters`;
 * - 5.x reads `rope_scaling` if non-null, else `rope_parameters`, taking θ from that dict's
 *   `rope_theta`, else from the top-level `rope_theta`, else 10000.
 * A file with only `rope_parameters` is a 5.x file and read the 5.x way; a file with the 4.x
 * keys (and possibly `rope_parameters` too) must mean the same under both readings, or it is an
 * error naming the keys that disagree.
 *
 * @example transformers 4.x rotary keys to rope_parameters
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const rope = mg.nn.ropeFromHf({
 *   rope_theta: 50000,
 *   rope_scaling: { type: "yarn", factor: 32, original_max_position_embeddings: 4096 },
 * }, 131072);
 * console.log(rope.rope_type, rope.rope_theta); // yarn 50000
 * ```
 */
export function ropeFromHf(json: Record<string, unknown>, maxPositions: number): RopeParameters {
  const theta = json.rope_theta;
  if (theta !== undefined && (typeof theta !== "number" || !Number.isFinite(theta))) {
    fail(`rope_theta must be a finite number, got ${JSON.stringify(theta)}`);
  }
  const scaling = json.rope_scaling, params = json.rope_parameters;
  if (scaling !== undefined && scaling !== null && !isObj(scaling)) {
    fail(`rope_scaling must be an object or null, got ${JSON.stringify(scaling)}`);
  }
  if (params !== undefined && params !== null && !isObj(params)) {
    fail(`rope_parameters must be an object or null, got ${JSON.stringify(params)}`);
  }
  const top = (theta as number | undefined) ?? HF_DEFAULTS.rope_theta;
  const has4 = theta !== undefined || scaling !== undefined;
  // transformers 5.x: rope_scaling (if truthy) replaces rope_parameters.
  const d5 = isObj(scaling) && Object.keys(scaling).length > 0
    ? scaling
    : isObj(params)
    ? params
    : {};
  const v5 = ropeDict(d5, d5 === scaling ? "rope_scaling" : "rope_parameters", top, maxPositions);
  if (!has4) return v5;
  // transformers 4.x: rope_theta + rope_scaling; a rope_theta inside rope_scaling is ignored.
  let v4: RopeParameters;
  if (scaling === undefined || scaling === null) {
    v4 = { rope_type: "default", rope_theta: top };
  } else {
    const { rope_theta: _ignored, ...rest } = scaling as Record<string, unknown>;
    if (Object.keys(rest).length === 0) fail("rope_scaling is empty (expected null or a type)");
    v4 = ropeDict(rest, "rope_scaling", top, maxPositions);
  }
  if (JSON.stringify(v4) !== JSON.stringify(v5)) {
    fail(
      `the rotary keys mean different things to transformers 4.x (rope_theta + rope_scaling: ` +
        `${JSON.stringify(v4)}) and 5.x (${isObj(params) ? "rope_parameters" : "rope_scaling"}: ${
          JSON.stringify(v5)
        }); make rope_theta, rope_scaling and rope_parameters agree`,
    );
  }
  return v4;
}

/**
 * A `KimiConfig` from a parsed config.json, read as transformers' `DeepseekV3Config` reads it:
 * absent keys take HF's defaults (`HF_DEFAULTS`: a DeepSeek-V3-sized model), `null`
 * num_key_value_heads means num_attention_heads, the rotary keys of either transformers version
 * are normalised into `rope_parameters`, harmless metadata is kept in `hf_metadata`, and any
 * other key, or a value moongrad does not implement, is an error naming the key.
 * @example
 * ```ts
 * const cfg = configFromHf({ hidden_size: 64, num_hidden_layers: 2, n_group: 1, topk_group: 1 });
 * cfg.vocab_size; // 129280, HF's default
 * ```
 */
export function configFromHf(json: unknown): KimiConfig {
  if (!isObj(json)) fail(`expected a config.json object, got ${JSON.stringify(json)}`);
  const unknown = Object.keys(json).filter((k) => !(k in HF_KEYS));
  if (unknown.length) {
    fail(
      `unknown config key${unknown.length > 1 ? "s" : ""} ${
        unknown.map((k) => `"${k}"`).join(", ")
      }: moongrad implements no such DeepseekV3 setting (refusing rather than ignoring it)`,
    );
  }
  const out: Record<string, unknown> = { ...HF_DEFAULTS, ...REMOTE_DEFAULTS };
  delete out.rope_theta;
  for (const [k, kind] of Object.entries(FIELDS)) {
    if (k in json) {
      checkKind(k, json[k], kind);
      out[k] = json[k];
    }
  }
  if (out.num_key_value_heads === null) out.num_key_value_heads = out.num_attention_heads;
  const meta: Record<string, unknown> = {};
  for (const k of METADATA) if (k in json) meta[k] = json[k];
  checkMetadata(meta, out);
  const dims = out as unknown as KimiConfig;
  const derived = {
    qk_head_dim: dims.qk_nope_head_dim + dims.qk_rope_head_dim,
    head_dim: dims.qk_rope_head_dim,
  };
  for (const k of DERIVED) {
    if (k in json && json[k] !== derived[k]) {
      fail(`${k} ${JSON.stringify(json[k])} does not match the sizes (expected ${derived[k]})`);
    }
  }
  out.rope_parameters = ropeFromHf(json, dims.max_position_embeddings);
  out.hf_metadata = meta;
  const cfg = out as unknown as KimiConfig;
  validateConfig(cfg);
  return cfg;
}

function checkMetadata(meta: Record<string, unknown>, fields: Record<string, unknown>): void {
  const a = meta.architectures;
  if (a !== undefined) {
    if (!Array.isArray(a) || !a.includes("DeepseekV3ForCausalLM")) {
      fail(`architectures ${JSON.stringify(a)} does not name DeepseekV3ForCausalLM`);
    }
  }
  if (meta.model_type !== undefined && !MODEL_TYPES.includes(meta.model_type as string)) {
    fail(`model_type ${JSON.stringify(meta.model_type)} is not one of ${MODEL_TYPES.join(", ")}`);
  }
  if (meta.moe_layer_freq !== undefined && meta.moe_layer_freq !== 1) {
    fail(
      `moe_layer_freq ${JSON.stringify(meta.moe_layer_freq)} is not supported (expected 1: ` +
        "every layer from first_k_dense_replace on is a MoE layer)",
    );
  }
  if (meta.seq_aux !== undefined && typeof meta.seq_aux !== "boolean") {
    fail(`seq_aux must be a boolean, got ${JSON.stringify(meta.seq_aux)}`);
  }
  if (meta.seq_aux === false && (fields.aux_loss_alpha as number) > 0) {
    fail("seq_aux false (a batch-wise aux loss) is not implemented; moongrad's is sequence-wise");
  }
  for (const k of ["quantization_config", "auto_map"] as const) {
    if (meta[k] !== undefined && !isObj(meta[k])) fail(`${k} must be an object`);
  }
}

/**
 * Reads and parses a config.json file (or the config.json inside a directory) with
 * `configFromHf`.
 * @example
 * ```ts
 * const cfg = await loadConfig("checkpoints/k2/config.json");
 * ```
 */
export async function loadConfig(path: string): Promise<KimiConfig> {
  let file = path;
  try {
    if ((await Deno.stat(path)).isDirectory) file = `${path.replace(/\/+$/, "")}/config.json`;
  } catch { /* reported by the read below */ }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new MoongradError("loadConfig", `could not read ${file}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new MoongradError("loadConfig", `${file} is not JSON: ${(e as Error).message}`);
  }
  try {
    return configFromHf(json);
  } catch (e) {
    if (e instanceof MoongradError) {
      throw new MoongradError("loadConfig", `${file}: ${e.message.replace(/^moongrad\./, "")}`);
    }
    throw e;
  }
}

/** The YaRN fields as a config dict (nulls omitted; truncate only when false). */
function ropeFields(r: RopeParameters): Record<string, unknown> {
  if (r.rope_type === "default") return {};
  const o: Record<string, unknown> = {
    factor: r.factor,
    original_max_position_embeddings: r.original_max_position_embeddings,
    beta_fast: r.beta_fast,
    beta_slow: r.beta_slow,
  };
  for (const k of ["mscale", "mscale_all_dim", "attention_factor"] as const) {
    if (r[k] !== null) o[k] = r[k];
  }
  if (!r.truncate) o.truncate = false;
  return o;
}

/**
 * The config in config.json form, read identically by transformers 4.x and 5.x:
 * `architectures` ["DeepseekV3ForCausalLM"] and `model_type` "deepseek_v3" (the native class,
 * no remote code), the weights' dtype ("float32"), every KimiConfig field, the rotary
 * parameters written three consistent ways (`rope_theta`, `rope_scaling` null or
 * {type, rope_type, ...}, and `rope_parameters` {rope_type, rope_theta, ...}), and the metadata
 * that stays true of a moongrad checkpoint (use_cache, pretraining_tp, ep_size, seq_aux,
 * moe_layer_freq). Dropped on purpose: auto_map (remote code), quantization_config (moongrad
 * saves unquantized weights), transformers_version, num_nextn_predict_layers (no MTP weights
 * are saved), _name_or_path. `configFromHf(toHfConfig(c))` gives back c's fields.
 * @example
 * ```ts
 * await Deno.writeTextFile("config.json", JSON.stringify(toHfConfig(model.config), null, 2));
 * ```
 */
export function toHfConfig(cfg: KimiConfig): Record<string, unknown> {
  const {
    rope_parameters: rope,
    hf_metadata: meta,
    num_nextn_predict_layers: _mtp,
    ...fields
  } = cfg;
  const kept: Record<string, unknown> = {};
  for (const k of ["use_cache", "pretraining_tp", "ep_size", "seq_aux", "moe_layer_freq"]) {
    if (meta[k] !== undefined) kept[k] = meta[k];
  }
  const extra = ropeFields(rope);
  return {
    architectures: ["DeepseekV3ForCausalLM"],
    model_type: "deepseek_v3",
    torch_dtype: "float32",
    ...kept,
    ...fields,
    rope_theta: rope.rope_theta,
    rope_scaling: rope.rope_type === "default"
      ? null
      : { type: rope.rope_type, rope_type: rope.rope_type, ...extra },
    rope_parameters: { rope_type: rope.rope_type, rope_theta: rope.rope_theta, ...extra },
  };
}
