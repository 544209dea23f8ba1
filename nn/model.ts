/**
 * The K2-style decoder-only language model (HF `DeepseekV3ForCausalLM` names):
 * embed_tokens → layers (pre-norm MLA + dense MLP or MoE, residuals) → norm → lm_head.
 */
import "../ops/tensor_methods.ts"; // installs the Tensor methods this module calls
import { noGrad } from "../core/autograd.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { mulberry32 } from "../core/random.ts";
import { scope } from "../core/scope.ts";
import { Tensor } from "../core/tensor.ts";
import { add, div } from "../ops/elementwise.ts";
import { crossEntropy } from "../ops/loss.ts";
import { checkAllocation } from "../core/limits.ts";
import { softmax } from "../ops/softmax.ts";
import { tensor } from "../ops/creation.ts";
import { slice } from "../ops/layout.ts";
import { topk } from "../ops/indexing.ts";
import { type KimiConfig, makeConfig, requireRunnableRope } from "./config.ts";
import { Embedding } from "./embedding.ts";
import { Linear } from "./linear.ts";
import { type LatentCache, MultiHeadLatentAttention } from "./mla.ts";
import { MLP } from "./mlp.ts";
import { DeepseekMoE } from "./moe.ts";
import { deriveSeed, Module, ModuleList } from "./module.ts";
import { RMSNorm } from "./rmsnorm.ts";
import {
  checkStats,
  type ForwardContext,
  type ForwardOptions,
  type StepStats,
} from "./step_stats.ts";
import { checkTokenIdsAsync, type TokenIds, tokenTensor } from "./token_ids.ts";
import {
  loadPretrainedWeights,
  readPretrainedConfig,
  savePretrained,
  type SavePretrainedOptions,
} from "../io/pretrained.ts";

/**
 * Options of model construction.
 *
 * @example Same seed, same model
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.ModelOptions = { seed: 0 };
 * const a = new mg.nn.KimiLM("tiny", opts);
 * const b = new mg.nn.KimiLM("tiny", opts);
 * console.log(await a.lmHead.weight.sub(b.lmHead.weight).abs().max().item()); // 0
 * ```
 */
export interface ModelOptions {
  /** Seed of the initialisation (every parameter gets its own derived seed). */
  seed?: number;
}

/**
 * One pre-norm block: x + attn(norm(x)), then h + mlp(norm(h)).
 *
 * @example One pre-norm block: dense MLP in layer 0, MoE after
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const dense = new mg.nn.DecoderLayer(config, 0, { seed: 0 });
 * const moe = new mg.nn.DecoderLayer(config, 1, { seed: 0 });
 * console.log(dense.mlp instanceof mg.nn.MLP, moe.mlp instanceof mg.nn.DeepseekMoE); // true true
 * console.log(moe.forward(mg.randn([1, 8, config.hidden_size], { seed: 1 })).shape); // [1, 8, 128]
 * ```
 */
export class DecoderLayer extends Module {
  /** Norm before attention. */
  readonly inputLayernorm: RMSNorm;
  /** Multi-head latent attention. */
  readonly selfAttn: MultiHeadLatentAttention;
  /** Norm before the MLP. */
  readonly postAttentionLayernorm: RMSNorm;
  /** Dense SwiGLU for layers below first_k_dense_replace, else the MoE block. */
  readonly mlp: MLP | DeepseekMoE;

  /** Creates layer `index` of a model with `config`. */
  constructor(config: KimiConfig, index: number, options: ModelOptions = {}) {
    super();
    const seed = (name: string) => deriveSeed(options.seed, `${index}.${name}`);
    const eps = config.rms_norm_eps;
    try {
      this.inputLayernorm = this.module(
        "input_layernorm",
        new RMSNorm(config.hidden_size, { eps }),
      );
      this.selfAttn = this.module(
        "self_attn",
        new MultiHeadLatentAttention(config, { seed: seed("self_attn") }),
      );
      this.postAttentionLayernorm = this.module(
        "post_attention_layernorm",
        new RMSNorm(config.hidden_size, { eps }),
      );
      this.mlp = this.module(
        "mlp",
        index < config.first_k_dense_replace
          ? new MLP(config.hidden_size, config.intermediate_size, {
            std: config.initializer_range,
            seed: seed("mlp"),
          })
          : new DeepseekMoE(config, { seed: seed("mlp") }),
      );
    } catch (e) {
      this.dispose(); // the sub-layers made before the error
      throw e;
    }
  }

  /**
   * x [B, T, D] → [B, T, D]; with a cache, attention runs on the latent cache (decode, no
   * statistics). `ctx` carries the step's statistics and the auxiliary-loss collector.
   */
  forward(
    x: Tensor,
    positionOffset = 0,
    cache?: LatentCache,
    ctx: ForwardContext = {},
  ): Tensor {
    // Each scope frees what it made once its result exists; the aux losses the MoE pushes
    // into ctx.auxLosses survive them (moved to the caller's scope).
    const aux = ctx.auxLosses;
    return scope(() => {
      // x + attention(norm(x)): training adds x in o_proj's epilogue (addmm, same sum).
      const h = scope(() => {
        const n1 = this.inputLayernorm.forward(x);
        return cache
          ? add(x, this.selfAttn.forwardCached(n1, cache))
          : this.selfAttn.forward(n1, positionOffset, ctx, x);
      });
      const m = scope(() => {
        const n2 = this.postAttentionLayernorm.forward(h);
        return this.mlp instanceof DeepseekMoE
          ? this.mlp.forward(n2, ctx, h)
          : this.mlp.forward(n2, h);
      }, aux);
      // h + MLP(norm(h)): the dense MLP adds h in its down projection's epilogue, the MoE in
      // its routed combine's kernel.
      return m;
    }, aux);
  }
}

/**
 * The decoder stack (HF `DeepseekV3Model`, named `model`).
 *
 * @example The decoder stack: hidden states, not logits
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm = new mg.nn.KimiLM("tiny", { seed: 0 });
 * const ids = mg.tensor([[1, 2, 3, 4]], { dtype: "i32" });
 * const hidden = lm.model.forward(ids); // after the final norm
 * console.log(hidden.shape, lm.model.layers.length); // [1, 4, 128] 4
 * ```
 */
export class KimiModel extends Module {
  /** Token embeddings. */
  readonly embedTokens: Embedding;
  /** The decoder layers. */
  readonly layers: ModuleList<DecoderLayer>;
  /** Final norm. */
  readonly norm: RMSNorm;

  /** Creates the stack. */
  constructor(config: KimiConfig, options: ModelOptions = {}) {
    super();
    try {
      this.embedTokens = this.module(
        "embed_tokens",
        new Embedding(config.vocab_size, config.hidden_size, {
          std: config.initializer_range,
          seed: deriveSeed(options.seed, "embed_tokens"),
        }),
      );
      // Registered first and filled one layer at a time, so an error frees the layers made.
      this.layers = this.module("layers", new ModuleList<DecoderLayer>());
      for (let i = 0; i < config.num_hidden_layers; i++) {
        this.layers.push(new DecoderLayer(config, i, options));
      }
      this.norm = this.module(
        "norm",
        new RMSNorm(config.hidden_size, { eps: config.rms_norm_eps }),
      );
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** ids [B, T] i32 → hidden states [B, T, D]; `ctx` as in `DecoderLayer.forward`. */
  forward(
    ids: Tensor,
    positionOffset = 0,
    caches?: readonly LatentCache[],
    ctx: ForwardContext = {},
  ): Tensor {
    return scope(() => {
      let h = this.embedTokens.forward(ids);
      for (let i = 0; i < this.layers.length; i++) {
        const next = this.layers.at(i).forward(h, positionOffset, caches?.[i], ctx);
        h.dispose(); // freed layer by layer, not at the end: one hidden state lives at a time
        h = next;
      }
      return this.norm.forward(h);
    }, ctx.auxLosses);
  }
}

/**
 * Options of `generate`.
 *
 * @example Greedy decoding that stops at an end token
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const model = new mg.nn.KimiLM("tiny", { seed: 0 });
 * const opts: mg.nn.GenerateOptions = { maxNewTokens: 8, temperature: 0, eosTokenId: 10 };
 * const [row] = await model.generate(mg.tensor([[72, 105]], { dtype: "i32" }), opts);
 * console.log(row.length <= 8); // true
 * ```
 */
export interface GenerateOptions {
  /** Tokens to add after the prompt. */
  maxNewTokens: number;
  /** Softmax temperature (0 = greedy). Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens (default: 50, capped at the vocabulary). */
  topK?: number;
  /** Seed of the sampler: same seed, same tokens. */
  seed?: number;
  /** Called with each new token id (per batch row) as soon as it is chosen. */
  onToken?: (tokens: number[]) => void;
  /** Stop a row when it emits this id. */
  eosTokenId?: number;
}

/**
 * The causal language model (HF `DeepseekV3ForCausalLM`): `model` + `lm_head`.
 *
 * @example Train a step with MuonClip, sample, save and reload
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const model = new mg.nn.KimiLM("tiny", { seed: 0 }); // or a KimiConfig (HF DeepseekV3Config keys)
 * const opt = new mg.optim.MuonClip(model, { lr: 2e-2, tau: 100 });
 * const batch = [Array.from(new TextEncoder().encode("hello, moongrad"))]; // byte ids [1, 15]
 * const loss = model.loss(batch, { labels: batch }); // HF: shifted inside
 * console.log(await loss.item() > 5); // true (≈ ln 256 before training)
 * loss.backward();
 * await opt.step(); // Muon + AdamW, then QK-Clip per head
 * opt.zeroGrad();
 * model.updateRouterBias(1e-3);
 * const prompt = mg.tensor([batch[0].slice(0, 5)], { dtype: "i32" });
 * const [tokens] = await model.generate(prompt, { maxNewTokens: 4, seed: 1 }); // latent KV cache
 * console.log(tokens.length); // 4
 * const dir = await Deno.makeTempDir();
 * await model.savePretrained(dir); // config.json + model.safetensors
 * const again = await mg.nn.KimiLM.fromPretrained(dir);
 * console.log(again.config.hidden_size); // 128
 * ```
 */
export class KimiLM extends Module {
  /** The configuration (HF keys). */
  readonly config: KimiConfig;
  /** The decoder stack. */
  readonly model: KimiModel;
  /** Hidden → vocabulary logits. */
  readonly lmHead: Linear;

  /** Creates a model from a config (a preset name or partial config over `tiny`). */
  constructor(
    config: KimiConfig | keyof typeof import("./config.ts").PRESETS = "tiny",
    options: ModelOptions = {},
  ) {
    super();
    this.config = typeof config === "string" ? makeConfig(config) : makeConfig(config);
    // Refuse an unrunnable config before allocating anything (a 1 T config would try to).
    requireRunnableRope("KimiLM", this.config);
    for (const [name, shape] of parameterShapes(this.config)) {
      checkAllocation(shape, "f32", `KimiLM (parameter ${name})`);
    }
    try {
      this.model = this.module("model", new KimiModel(this.config, options));
      this.lmHead = this.module(
        "lm_head",
        new Linear(this.config.hidden_size, this.config.vocab_size, {
          bias: false,
          std: this.config.initializer_range,
          seed: deriveSeed(options.seed, "lm_head"),
        }),
      );
    } catch (e) {
      this.dispose(); // the layers made before the error
      throw e;
    }
  }

  /**
   * Loads a model from a Hugging Face style directory: config.json read with transformers'
   * semantics (`loadConfig`) and the weights of model.safetensors or of the shards listed in
   * model.safetensors.index.json (F32, BF16 or F16, widened to f32; MTP layers skipped). The
   * model is built from the config (seeded init, then overwritten), every name, shape and
   * dtype is checked before any upload, and a quantized checkpoint is refused by name.
   * @example
   * ```ts
   * const model = await KimiLM.fromPretrained("checkpoints/run1");
   * ```
   */
  static async fromPretrained(dir: string, options: ModelOptions = {}): Promise<KimiLM> {
    const config = await readPretrainedConfig(dir);
    const model = new KimiLM(config, options);
    try {
      await loadPretrainedWeights(model, dir.replace(/\/+$/, ""), {
        numHiddenLayers: config.num_hidden_layers,
        mtpLayers: config.num_nextn_predict_layers,
      });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }

  /**
   * Saves the model like transformers' `save_pretrained`: creates `dir`, writes config.json
   * (`toHfConfig`) and model.safetensors, or above `maxShardSize` (default 5·10⁹ bytes, HF's
   * "5GB") `model-0000k-of-0000n.safetensors` shards plus model.safetensors.index.json.
   * @example
   * ```ts
   * await model.savePretrained("checkpoints/run1");
   * ```
   */
  async savePretrained(
    dir: string,
    options: SavePretrainedOptions = {},
  ): Promise<{ files: string[]; totalSize: number }> {
    return await savePretrained(dir.replace(/\/+$/, ""), this, this.config, options);
  }

  /**
   * ids [B, T] → logits f32 [B, T, vocab]. `ids` is an i32 tensor, or host data (rows of ids,
   * or `{ data, shape }`) that is checked against [0, vocab_size) on the CPU before upload: a
   * bad id is an error naming it and its [batch, position]. Ids already on the GPU are not
   * read back here (see `checkTokenIds`). With `options.stats` (training mode, no caches) the
   * forward records its attention max logits and MoE loads there (see `StepStats`).
   */
  forward(
    ids: TokenIds,
    positionOffset = 0,
    caches?: readonly LatentCache[],
    options: ForwardOptions = {},
  ): Tensor {
    const stats = checkStats("KimiLM.forward", options.stats);
    return scope(() => {
      const { t } = tokenTensor("KimiLM.forward", "ids", ids, {
        vocabSize: this.config.vocab_size,
      });
      return this.lmHead.forward(this.model.forward(t, positionOffset, caches, { stats }));
    });
  }

  /**
   * Mean next-token cross-entropy, plus the MoE layers' sequence-wise auxiliary losses when
   * `aux_loss_alpha` > 0. Two forms:
   * - `loss(ids, targets)`: unshifted targets, `targets[b, t]` is the token logits[b, t] must
   *   predict (the caller shifted them); −100 is ignored.
   * - `loss(ids, { labels })`: HF's convention (`DeepseekV3ForCausalLM(labels=...)`), labels
   *   aligned with ids and shifted inside: logits[:, :-1] are scored against labels[:, 1:],
   *   −100 ignored, the mean over the tokens not ignored (NaN when all are, as in PyTorch);
   *   usually `labels` = `ids`. The last position's logits are not computed. Needs T ≥ 2.
   * Host ids/labels are range-checked for free ([0, vocab_size), or −100 for labels and
   * targets); GPU tensors are not read back (a bad target makes the loss NaN; see
   * `checkTokenIds`).
   * `options.stats`: the step's `StepStats`, where a training forward records the max logits
   * QK-Clip needs and the MoE loads (pass the same object to every micro-batch of a step);
   * evaluation passes none.
   * @example
   * ```ts
   * const loss = model.loss(batch, { labels: batch }); // batch: number[][] of token ids
   * ```
   */
  loss(
    ids: TokenIds,
    targets: TokenIds | { labels: TokenIds },
    options: ForwardOptions = {},
  ): Tensor {
    const op = "KimiLM.loss";
    const ctx: ForwardContext = { stats: checkStats(op, options.stats), auxLosses: [] };
    const V = this.config.vocab_size;
    const shifted = isLabels(targets);
    // The scope frees the host ids' upload, the hidden states, logits and the aux losses once
    // the total exists (the tape keeps what backward needs), also when a check throws.
    return scope(() => {
      const x = tokenTensor(op, "ids", ids, { vocabSize: V });
      const y = tokenTensor(
        op,
        shifted ? "labels" : "targets",
        shifted ? targets.labels : targets,
        {
          vocabSize: V,
          ignoreIndex: IGNORE_INDEX,
        },
      );
      const [B, T] = x.t.shape;
      if (y.t.shape[0] !== B || y.t.shape[1] !== T) {
        throw new MoongradError(
          op,
          `${shifted ? "labels" : "targets"} ${fmtShape(y.t.shape)} must match ids ${
            fmtShape(x.t.shape)
          }`,
        );
      }
      if (shifted && T < 2) {
        throw new MoongradError(
          op,
          `labels need T >= 2 tokens (position t predicts label t + 1), got ids ${
            fmtShape(x.t.shape)
          }`,
        );
      }
      const h = this.model.forward(x.t, 0, undefined, ctx);
      // With labels, the last position predicts nothing: score h[:, :-1] against y[:, 1:].
      const logits = this.lmHead.forward(shifted ? slice(h, 1, 0, T - 1) : h);
      const tgt = shifted ? slice(y.t, 1, 1, T) : y.t;
      const loss = crossEntropy(logits, tgt, { ignoreIndex: IGNORE_INDEX });
      return ctx.auxLosses!.reduce((total, aux) => add(total, aux), loss);
    });
  }

  /**
   * Checks GPU token ids (and labels/targets, −100 allowed) against [0, vocab_size) with one
   * readback each, throwing a MoongradError naming the first bad id and its [batch, position].
   * Host data passed to `forward` / `loss` is checked without this.
   */
  async checkTokenIds(ids: Tensor, labels?: Tensor): Promise<void> {
    const V = this.config.vocab_size;
    await checkTokenIdsAsync("KimiLM.checkTokenIds", "ids", ids, { vocabSize: V });
    if (labels) {
      await checkTokenIdsAsync("KimiLM.checkTokenIds", "labels", labels, {
        vocabSize: V,
        ignoreIndex: IGNORE_INDEX,
      });
    }
  }

  /** The MoE blocks, in layer order. */
  moeLayers(): DeepseekMoE[] {
    return [...this.model.layers].flatMap((l) => (l.mlp instanceof DeepseekMoE ? [l.mlp] : []));
  }

  /** The attention modules, in layer order (their max logits in a `StepStats` feed MuonClip). */
  attentionLayers(): MultiHeadLatentAttention[] {
    return [...this.model.layers].map((l) => l.selfAttn);
  }

  /**
   * Applies the aux-loss-free bias update of every MoE layer (after an optimizer step) with the
   * loads `stats` recorded over the step's training forwards.
   */
  updateRouterBias(stats: StepStats, gamma = 1e-3): void {
    const s = checkStats("KimiLM.updateRouterBias", stats);
    if (!s) {
      throw new MoongradError(
        "KimiLM.updateRouterBias",
        "needs the step's StepStats (the loads of its training forwards)",
      );
    }
    for (const moe of this.moeLayers()) moe.updateBias(s, gamma);
  }

  /** Empty latent caches, one per layer, for batch size `batch`. */
  newCaches(batch: number): LatentCache[] {
    return this.attentionLayers().map((a) => a.newCache(batch));
  }

  /**
   * Autoregressive sampling with the latent KV cache: one prefill of the prompt, then one
   * token per step. Returns the new token ids per batch row. Reads back one [B, topK]
   * probability block per step to choose the token on the CPU (seeded).
   */
  async generate(prompt: Tensor, options: GenerateOptions): Promise<number[][]> {
    const { maxNewTokens } = options;
    if (prompt.dtype !== "i32" || prompt.rank !== 2 || prompt.shape[1] === 0) {
      throw new MoongradError(
        "generate",
        `prompt must be i32 [batch, seq] with seq >= 1, got ${prompt.dtype} ${
          fmtShape(prompt.shape)
        }`,
      );
    }
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
      throw new MoongradError(
        "generate",
        `maxNewTokens must be a non-negative integer, got ${maxNewTokens}`,
      );
    }
    const temperature = options.temperature ?? 1;
    if (!(temperature >= 0)) {
      throw new MoongradError("generate", `temperature must be >= 0, got ${temperature}`);
    }
    const k = Math.min(options.topK ?? 50, this.config.vocab_size);
    if (!Number.isInteger(k) || k < 1) {
      throw new MoongradError("generate", `topK must be a positive integer, got ${options.topK}`);
    }
    const batch = prompt.shape[0];
    const rng = mulberry32(options.seed ?? 0);
    const caches = this.newCaches(batch);
    const out: number[][] = Array.from({ length: batch }, () => []);
    const done = new Array<boolean>(batch).fill(false);
    try {
      let input = prompt;
      let offset = 0;
      for (let step = 0; step < maxNewTokens; step++) {
        const { values, indices } = noGrad(() =>
          scope(() => {
            // The logits are freed as soon as the top k of the last position are taken.
            const r = scope(() => {
              const logits = this.forward(input, offset, caches);
              const rows = slice(logits, 1, logits.shape[1] - 1)
                .reshape([batch, this.config.vocab_size]);
              return topk(rows, temperature === 0 ? 1 : k);
            });
            const probs = softmax(div(r.values, temperature === 0 ? 1 : temperature), -1);
            return { values: probs, indices: r.indices };
          })
        );
        const [p, ix] = await Promise.all([values.data(), indices.data()]);
        values.dispose();
        indices.dispose();
        const width = temperature === 0 ? 1 : k;
        const next: number[] = [];
        for (let b = 0; b < batch; b++) {
          let u = rng();
          let pick = width - 1;
          for (let j = 0; j < width; j++) {
            u -= p[b * width + j];
            if (u <= 0) {
              pick = j;
              break;
            }
          }
          const id = ix[b * width + pick];
          next.push(id);
          if (!done[b]) out[b].push(id);
          if (options.eosTokenId !== undefined && id === options.eosTokenId) done[b] = true;
        }
        options.onToken?.(next);
        offset += input.shape[1];
        if (input !== prompt) input.dispose();
        input = tensor(Int32Array.from(next), { shape: [batch, 1] });
        if (done.every(Boolean)) break;
      }
      if (input !== prompt) input.dispose();
    } finally {
      for (const c of caches) c.dispose();
    }
    return out;
  }
}

/** HF's ignore index for labels (`-100`). */
const IGNORE_INDEX = -100;

function isLabels(t: TokenIds | { labels: TokenIds }): t is { labels: TokenIds } {
  return !(t instanceof Tensor) && !Array.isArray(t) && typeof t === "object" && t !== null &&
    "labels" in t;
}

/**
 * Every parameter and buffer name of a model with `config` and its shape, computed without
 * allocating anything (how the real `kimi-k2` shape is checked). Names are HF's, with one
 * entry per routed expert.
 *
 * @example Every tensor name and shape of a config
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const shapes = mg.nn.parameterShapes(mg.nn.makeConfig("tiny"));
 * console.log(shapes.size, shapes.get("model.layers.1.mlp.gate.weight")); // 113 [8, 128]
 * ```
 */
export function parameterShapes(config: KimiConfig): Map<string, number[]> {
  const c = config;
  const m = new Map<string, number[]>();
  const D = c.hidden_size;
  const H = c.num_attention_heads;
  const dqk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  m.set("model.embed_tokens.weight", [c.vocab_size, D]);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    m.set(`${p}.input_layernorm.weight`, [D]);
    const a = `${p}.self_attn`;
    // HF DeepseekV3Attention: attention_bias on q_a_proj, kv_a_proj_with_mqa and o_proj only.
    const bias = (name: string, n: number) => {
      if (c.attention_bias) m.set(`${a}.${name}.bias`, [n]);
    };
    if (c.q_lora_rank === null) m.set(`${a}.q_proj.weight`, [H * dqk, D]);
    else {
      m.set(`${a}.q_a_proj.weight`, [c.q_lora_rank, D]);
      bias("q_a_proj", c.q_lora_rank);
      m.set(`${a}.q_a_layernorm.weight`, [c.q_lora_rank]);
      m.set(`${a}.q_b_proj.weight`, [H * dqk, c.q_lora_rank]);
    }
    m.set(`${a}.kv_a_proj_with_mqa.weight`, [c.kv_lora_rank + c.qk_rope_head_dim, D]);
    bias("kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim);
    m.set(`${a}.kv_a_layernorm.weight`, [c.kv_lora_rank]);
    m.set(`${a}.kv_b_proj.weight`, [H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank]);
    m.set(`${a}.o_proj.weight`, [D, H * c.v_head_dim]);
    bias("o_proj", D);
    m.set(`${p}.post_attention_layernorm.weight`, [D]);
    const mlp = (prefix: string, inner: number) => {
      m.set(`${prefix}.gate_proj.weight`, [inner, D]);
      m.set(`${prefix}.up_proj.weight`, [inner, D]);
      m.set(`${prefix}.down_proj.weight`, [D, inner]);
    };
    if (i < c.first_k_dense_replace) mlp(`${p}.mlp`, c.intermediate_size);
    else {
      m.set(`${p}.mlp.gate.weight`, [c.n_routed_experts, D]);
      m.set(`${p}.mlp.gate.e_score_correction_bias`, [c.n_routed_experts]);
      for (let e = 0; e < c.n_routed_experts; e++) {
        mlp(`${p}.mlp.experts.${e}`, c.moe_intermediate_size);
      }
      if (c.n_shared_experts > 0) {
        mlp(`${p}.mlp.shared_experts`, c.moe_intermediate_size * c.n_shared_experts);
      }
    }
  }
  m.set("model.norm.weight", [D]);
  m.set("lm_head.weight", [c.vocab_size, D]);
  return m;
}

/**
 * Parameter counts of a config (see `parameterCounts`).
 *
 * @example Kimi K2's size, without allocating it
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const counts: mg.nn.ParameterCounts = mg.nn.parameterCounts(mg.nn.makeConfig("kimi-k2"));
 * console.log(counts.total, counts.active); // 1026408209408 32859885568
 * ```
 */
export interface ParameterCounts {
  /** Every parameter (buffers such as e_score_correction_bias excluded; MTP layers too). */
  total: number;
  /** Parameters one token uses: total minus the (E − K) / E share of the routed experts. */
  active: number;
  /** embed_tokens + lm_head: subtract for the "excluding embeddings" figures papers quote. */
  embedding: number;
}

/**
 * Total, per-token-active and embedding parameter counts of a config, from
 * `parameterShapes` (nothing is allocated: works for 1 T-parameter configs).
 * @example
 * ```ts
 * parameterCounts(makeConfig("kimi-k2")).total; // 1_026_408_209_408
 * ```
 */
export function parameterCounts(config: KimiConfig): ParameterCounts {
  let total = 0;
  let inactive = 0;
  let embedding = 0;
  const K = config.num_experts_per_tok;
  const E = config.n_routed_experts;
  for (const [name, shape] of parameterShapes(config)) {
    if (name.endsWith("e_score_correction_bias")) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    total += n;
    if (name.includes(".mlp.experts.")) inactive += n * (1 - K / E);
    if (name === "model.embed_tokens.weight" || name === "lm_head.weight") embedding += n;
  }
  return { total, active: Math.round(total - inactive), embedding };
}
