/**
 * Neural-network building blocks: the Module system and the layers of a DeepSeek-V3 / Kimi K2
 * style model, with Hugging Face parameter names.
 * @module
 */
import "../ops/tensor_methods.ts";
export {
  copyParam,
  DEFAULT_INIT_STD,
  deriveSeed,
  type InitOptions,
  type LoadOptions,
  type LoadResult,
  Module,
  ModuleList,
  normalInit,
  type StateDict,
  type StateDictLike,
  stateDictProblems,
  type TensorSpec,
  zerosInit,
} from "./module.ts";
export { Linear, type LinearOptions } from "./linear.ts";
export { Embedding } from "./embedding.ts";
export { RMSNorm, type RMSNormOptions } from "./rmsnorm.ts";
export { MLP } from "./mlp.ts";
export {
  applyRope,
  ropeInvFreq,
  type RopeOptions,
  RotaryEmbedding,
  type RotaryEmbeddingOptions,
  type RotaryFrequencies,
  rotaryFrequencies,
  softmaxScaleFactor,
  yarnAttentionFactor,
  yarnCorrectionRange,
  yarnGetMscale,
} from "./rope.ts";
export { rmsNorm } from "../ops/rmsnorm.ts";
export { rope } from "../ops/rope.ts";
export { ropeInsertShared, ropeTail } from "../ops/rope_mla.ts";
export {
  type DefaultRope,
  type KimiConfig,
  makeConfig,
  PRESETS,
  requireRunnableRope,
  type RopeParameters,
  ropeProblems,
  validateConfig,
  type YarnRope,
} from "./config.ts";
export {
  configFromHf,
  HF_DEFAULTS,
  HF_KEYS,
  loadConfig,
  ropeFromHf,
  toHfConfig,
} from "./hf_config.ts";
export {
  type ForwardCachedOptions,
  LatentCache,
  type LatentCacheOptions,
  MLA_INNER_NORM_EPS,
  type MlaOptions,
  MultiHeadLatentAttention,
} from "./mla.ts";
export { DeepseekMoE, MoEExperts, MoEGate, type MoEOptions } from "./moe.ts";
export {
  checkTokenIdsAsync,
  checkTokenValues,
  type HostTokenIds,
  type TokenCheck,
  type TokenIds,
  tokenTensor,
} from "./token_ids.ts";
export {
  DecoderLayer,
  type GenerateOptions,
  KimiLM,
  KimiModel,
  type ModelOptions,
  type ParameterCounts,
  parameterCounts,
  parameterShapes,
} from "./model.ts";
export {
  type ForwardContext,
  type ForwardOptions,
  type MoeStepStats,
  type StatsLayers,
  StepStats,
  type StepStatsOptions,
  type StepStatsValues,
} from "./step_stats.ts";
