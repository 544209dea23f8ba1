/**
 * Optimizers: the Optimizer base (groups, state dicts), SGD, AdamW, Muon with GPU
 * Newton–Schulz, Moonlight's Muon/AdamW parameter split, and learning-rate schedules.
 * @module
 */
import "../ops/tensor_methods.ts";
export {
  type BaseOptions,
  type CommonOptions,
  disposeStateDict,
  type LearningRate,
  type NamedParam,
  namedParams,
  Optimizer,
  type OptimizerStateDict,
  type OptionValue,
  type ParamGroup,
  type ParamGroupSpec,
  type ParamsInput,
  type ParamSource,
  type ParamState,
  type UpdateContext,
} from "./optimizer.ts";
export { SGD, type SgdOptions } from "./sgd.ts";
export { AdamW, type AdamWOptions } from "./adamw.ts";
export {
  CUBIC_COEFFICIENTS,
  newtonSchulz,
  type NewtonSchulzOptions,
  type NsCoefficients,
  type NsMethod,
  nsSchedule,
  QUINTIC_COEFFICIENTS,
} from "./newton_schulz.ts";
export {
  minimaxQuintic,
  polarExpressCoefficients,
  type PolarExpressOptions,
} from "./polar_express.ts";
export { Muon, type MuonOptions, type MuonScale, muonScale } from "./muon.ts";
export {
  adamwReason,
  type MoonlightSplit,
  MuonWithAdamW,
  type MuonWithAdamWOptions,
  type MuonWithAdamWStateDict,
  splitParamsMoonlight,
} from "./split.ts";
export {
  type CosineOptions,
  cosineSchedule,
  linearWarmup,
  type LrSchedule,
  type WarmupOptions,
  type WsdOptions,
  wsdSchedule,
} from "./schedule.ts";
export {
  type ClippableModel,
  type ClippedHead,
  MuonClip,
  type MuonClipOptions,
} from "./muon_clip.ts";
export { qkClipMha, qkClipMla, type QkClipOptions } from "./qk_clip.ts";
export { clipGradNorm, globalNorm, UpdateNorm } from "./grad_norm.ts";
