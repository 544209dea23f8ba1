/**
 * moongrad: a WebGPU-native tensor library with reverse-mode autograd.
 *
 * ```ts
 * import * as mg from "./mod.ts";
 * await mg.init();
 * const x = mg.tensor([[1, 2], [3, 4]]);
 * console.log(await x.matmul(x).softmax().toArray());
 * ```
 * @module
 */
import "./ops/tensor_methods.ts";
export { type DeviceInfo, deviceInfo, init, type InitOptions } from "./core/device.ts";
export { type DType, type TensorData } from "./core/dtype.ts";
export { MoongradError } from "./core/errors.ts";
export { type NestedArray, type Operand, Tensor } from "./core/tensor.ts";
export { scope } from "./core/scope.ts";
export { mulberry32, Rng } from "./core/random.ts";
export {
  type BackwardOptions,
  type GradNode,
  type GradPriors,
  isGradEnabled,
  noGrad,
  type Vjp,
} from "./core/autograd.ts";
export { Storage } from "./core/storage.ts";
export { type GpuBuf, type Slab } from "./core/pool.ts";
export { type Shape } from "./core/shape.ts";
export { emptyCache, memory, type MemoryStats, sync } from "./core/memory.ts";
export {
  arange,
  type CreateOptions,
  full,
  manualSeed,
  type NestedNumbers,
  ones,
  onesLike,
  rand,
  randn,
  type RandomOptions,
  tensor,
  zeros,
  zerosLike,
} from "./ops/creation.ts";
export {
  abs,
  add,
  cast,
  contiguous,
  cos,
  div,
  eq,
  exp,
  ge,
  gelu,
  gt,
  le,
  log,
  lt,
  maximum,
  minimum,
  mul,
  ne,
  neg,
  pow,
  relu,
  rsqrt,
  sigmoid,
  silu,
  sin,
  sqrt,
  square,
  sub,
  tanh,
  where,
} from "./ops/elementwise.ts";
export { fuse, type FusedFn, type FuseOptions } from "./ops/fuse.ts";
export { FuseExpr, type FuseOperand } from "./ops/fuse_expr.ts";
export {
  argmax,
  argmin,
  max,
  mean,
  min,
  sum,
  sumTo,
  variance,
  type VarOptions,
} from "./ops/reduce.ts";
export { clamp } from "./ops/clamp.ts";
export { logSoftmax, softmax } from "./ops/softmax.ts";
export { addmm, matmul, type MatmulConfig, matmulConfig, setMatmulConfig } from "./ops/matmul.ts";
export {
  broadcastTo,
  expand,
  permute,
  reshape,
  slice,
  squeeze,
  transpose,
  unsqueeze,
} from "./ops/layout.ts";
export { concat, split, stack } from "./ops/concat.ts";
export { swiglu } from "./ops/swiglu.ts";
export { embedding, gather, indexAdd, indexSelect, scatterAdd, topk } from "./ops/indexing.ts";
export { crossEntropy, type CrossEntropyOptions, mseLoss } from "./ops/loss.ts";
export { setCheckIndices } from "./ops/check_indices.ts";
/**
 * Neural-network modules (`mg.nn`): Kimi K2 / DeepSeek-V3 layers (MLA attention, DeepseekMoE, RMSNorm, RoPE), `KimiLM`, configs and `StepStats`. Also the `@moongrad/moongrad/nn` entry point.
 *
 * @example
 * ```ts
 * import * as mg from "./mod.ts";
 * const config = mg.nn.makeConfig("tiny");
 * console.log(config.hidden_size, mg.nn.parameterCounts(config).total); // 128 1670272
 * ```
 */
export * as nn from "./nn/mod.ts";
/**
 * File formats (`mg.io`): safetensors read/write and `save_pretrained`-style directories. Also the `@moongrad/moongrad/io` entry point.
 *
 * @example
 * ```ts
 * import * as mg from "./mod.ts";
 * console.log(mg.io.WEIGHTS_NAME, mg.io.planShards([["a", 60], ["b", 60]], 100)); // model.safetensors [["a"], ["b"]]
 * ```
 */
export * as io from "./io/mod.ts";
export {
  attention,
  type AttentionConfig,
  attentionConfig,
  type AttentionOptions,
  attentionPacked,
  type AttentionResult,
  setAttentionConfig,
} from "./ops/attention.ts";
/**
 * Optimizers (`mg.optim`): SGD, AdamW, Muon, MuonWithAdamW, MuonClip and learning-rate schedules. Also the `@moongrad/moongrad/optim` entry point.
 *
 * @example
 * ```ts
 * import * as mg from "./mod.ts";
 * const lr = mg.optim.cosineSchedule({ peak: 1e-3, warmupSteps: 10, totalSteps: 100 });
 * console.log(lr(9)); // 0.001
 * ```
 */
export * as optim from "./optim/mod.ts";
/**
 * Tokenizers (`mg.tokenizer`): byte-level BPE compatible with Hugging Face `tokenizer.json`, and its pre-tokenizers. Also the `@moongrad/moongrad/tokenizer` entry point.
 *
 * @example
 * ```ts
 * import * as mg from "./mod.ts";
 * const pre = mg.tokenizer.buildPreTokenizer(null); // no pre-tokenizer: the text is one piece
 * const pieces: string[] = [];
 * pre.split("hello world", (p) => pieces.push(p));
 * console.log(pieces); // ["hello world"]
 * ```
 */
export * as tokenizer from "./tokenizer/mod.ts";
