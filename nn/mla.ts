/**
 * Multi-head Latent Attention (HF `DeepseekV3Attention`, REFERENCE §4) with a training
 * forward through the fused attention kernel and a decode path over a latent cache that
 * absorbs `kv_b_proj` into the queries and the output. The rotary embedding follows the
 * config (nn/rope.ts): plain RoPE or YaRN (its inv_freq table and cos/sin attention factor,
 * plus DeepseekV3Attention's softmax-scale factor m(s, mscale_all_dim)²), in the interleaved
 * or half-split pair layout of `rope_interleave`. The cache stores k_rope already rotated, so
 * decode uses exactly the training forward's rotation.
 */
import { checkAllocation } from "../core/limits.ts";
import { noGrad } from "../core/autograd.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { scope } from "../core/scope.ts";
import { Tensor } from "../core/tensor.ts";
import { attention, attentionPacked } from "../ops/attention.ts";
import { concat } from "../ops/concat.ts";
import { copyInto } from "../ops/copy.ts";
import { expand, permute, reshape, slice, transpose, unsqueeze } from "../ops/layout.ts";
import { matmul } from "../ops/matmul.ts";
import {
  type KimiConfig,
  requireRunnableRope,
  type RopeParameters,
  validateConfig,
} from "./config.ts";
import { Linear } from "./linear.ts";
import { deriveSeed, Module } from "./module.ts";
import { RMSNorm } from "./rmsnorm.ts";
import { RotaryEmbedding, softmaxScaleFactor } from "./rope.ts";
import { checkStats, type ForwardContext } from "./step_stats.ts";

/**
 * The epsilon of MLA's two inner norms (HF hard-codes it, whatever `rms_norm_eps` says).
 *
 * @example The epsilon of q_a_layernorm and kv_a_layernorm
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const attn = new mg.nn.MultiHeadLatentAttention(mg.nn.makeConfig("tiny"));
 * console.log(attn.kvALayernorm.eps === mg.nn.MLA_INNER_NORM_EPS); // true
 * ```
 */
export const MLA_INNER_NORM_EPS = 1e-6;

/**
 * Options of `LatentCache`.
 *
 * @example Allocate a decode cache once
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.LatentCacheOptions = { capacity: 128 };
 * const cache = mg.nn.LatentCache.forConfig(mg.nn.makeConfig("tiny"), 1, opts);
 * console.log(cache.capacity, cache.bytes); // 128 20480
 * ```
 */
export interface LatentCacheOptions {
  /** Tokens to allocate room for up front (grown by doubling when exceeded); default 0. */
  capacity?: number;
}

/**
 * One MLA layer's decode cache: per token only the normalised latent `c` (kv_lora_rank
 * floats, after `kv_a_layernorm`) and the rotated shared rotary key `k_rope`
 * (qk_rope_head_dim floats) — `kv_lora_rank + qk_rope_head_dim` floats per token (576 in K2)
 * instead of H·(d_qk + d_v) for an expanded key/value cache. Both live side by side in one
 * f32 buffer [B, capacity, r_kv + d_r], so the absorbed decode reads [c | k_rope] as a
 * single shared key head without a copy. The buffer grows by doubling; pass `capacity` to
 * allocate once. A model keeps one cache per layer.
 *
 * @example Decode token by token from a latent cache
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const attn = new mg.nn.MultiHeadLatentAttention(config, { seed: 0 });
 * const cache = mg.nn.LatentCache.forConfig(config, 1); // kv_lora_rank + qk_rope_head_dim floats per token
 * const prompt = mg.randn([1, 5, config.hidden_size], { seed: 1 });
 * attn.forwardCached(prompt, cache); // prefill: 5 tokens cached
 * const next = attn.forwardCached(mg.randn([1, 1, config.hidden_size], { seed: 2 }), cache);
 * console.log(next.shape, cache.length, cache.floatsPerToken); // [1, 1, 128] 6 40
 * ```
 */
export class LatentCache {
  /** Batch size B. */
  readonly batch: number;
  /** Latent width r_kv. */
  readonly kvLoraRank: number;
  /** Rotary key width d_r. */
  readonly ropeDim: number;
  #buf: Tensor | null = null;
  #capacity = 0;
  #length = 0;

  /** Creates an empty cache for `batch` sequences. */
  constructor(
    batch: number,
    kvLoraRank: number,
    ropeDim: number,
    options: LatentCacheOptions = {},
  ) {
    const sizes = [["batch", batch], ["kvLoraRank", kvLoraRank], ["ropeDim", ropeDim]] as const;
    for (const [arg, v] of sizes) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new MoongradError("LatentCache", `${arg} must be a positive integer, got ${v}`);
      }
    }
    const capacity = options.capacity ?? 0;
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new MoongradError(
        "LatentCache",
        `capacity must be a non-negative integer, got ${capacity}`,
      );
    }
    this.batch = batch;
    this.kvLoraRank = kvLoraRank;
    this.ropeDim = ropeDim;
    if (capacity > 0) this.#grow(capacity);
  }

  /** A cache sized for the MLA layers of `config`. */
  static forConfig(
    config: KimiConfig,
    batch: number,
    options: LatentCacheOptions = {},
  ): LatentCache {
    return new LatentCache(batch, config.kv_lora_rank, config.qk_rope_head_dim, options);
  }

  /** Tokens cached so far (the position of the next token). */
  get length(): number {
    return this.#length;
  }

  /** Tokens the buffer holds room for. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Floats stored per token and sequence: kv_lora_rank + qk_rope_head_dim. */
  get floatsPerToken(): number {
    return this.kvLoraRank + this.ropeDim;
  }

  /** Bytes of the cache buffer: 4 · B · capacity · (r_kv + d_r). */
  get bytes(): number {
    return 4 * this.batch * this.#capacity * this.floatsPerToken;
  }

  /** A view [B, length, r_kv + d_r] of the cached [c | k_rope] rows; dispose it after use. */
  latents(): Tensor {
    return this.#window(0, this.floatsPerToken);
  }

  /** A view [B, length, r_kv] of the cached normalised latents c; dispose it after use. */
  c(): Tensor {
    return this.#window(0, this.kvLoraRank);
  }

  /** A view [B, length, d_r] of the cached rotated rotary keys; dispose it after use. */
  kRope(): Tensor {
    return this.#window(this.kvLoraRank, this.ropeDim);
  }

  /**
   * Appends the latents of T new tokens: c [B, T, r_kv] (after kv_a_layernorm) and the
   * rotated k_rope [B, T, d_r]. Copied in (no autograd); the inputs stay the caller's.
   */
  append(c: Tensor, kRope: Tensor): void {
    const op = "LatentCache.append";
    for (
      const [name, t, w] of [["c", c, this.kvLoraRank], ["kRope", kRope, this.ropeDim]] as const
    ) {
      if (!(t instanceof Tensor)) throw new MoongradError(op, `${name} must be a Tensor`);
      t.storage(op);
      if (t.dtype !== "f32" || t.rank !== 3 || t.shape[0] !== this.batch || t.shape[2] !== w) {
        throw new MoongradError(
          op,
          `${name} must be f32 [${this.batch}, T, ${w}], got ${t.dtype} ${fmtShape(t.shape)}`,
        );
      }
    }
    const T = c.shape[1];
    if (kRope.shape[1] !== T) {
      throw new MoongradError(
        op,
        `c ${fmtShape(c.shape)} and kRope ${fmtShape(kRope.shape)} hold different token counts`,
      );
    }
    if (T === 0) return;
    const need = this.#length + T;
    if (need > this.#capacity) this.#grow(Math.max(need, 2 * this.#capacity));
    noGrad(() =>
      scope(() => {
        copyInto(c, this.#slab(this.#length, T, 0, this.kvLoraRank));
        copyInto(kRope, this.#slab(this.#length, T, this.kvLoraRank, this.ropeDim));
      })
    );
    this.#length = need;
  }

  /** Forgets every token (keeps the buffer for reuse). */
  reset(): void {
    this.#length = 0;
  }

  /** Frees the buffer; the cache is empty after (and may be reused). */
  dispose(): void {
    this.#buf?.dispose();
    this.#buf = null;
    this.#capacity = 0;
    this.#length = 0;
  }

  /** `using cache = ...` support. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #slab(start: number, len: number, col: number, width: number): Tensor {
    const W = this.floatsPerToken;
    const buf = this.#buf!;
    return buf.view([this.batch, len, width], [this.#capacity * W, W, 1], start * W + col);
  }

  #window(col: number, width: number): Tensor {
    if (!this.#buf) {
      throw new MoongradError("LatentCache", "the cache is empty (nothing appended yet)");
    }
    return this.#slab(0, this.#length, col, width);
  }

  #grow(capacity: number): void {
    const next = Tensor.empty([this.batch, capacity, this.floatsPerToken], "f32").keep();
    if (this.#buf && this.#length > 0) {
      scope(() => {
        const old = this.#slab(0, this.#length, 0, this.floatsPerToken);
        const dst = next.view(
          [this.batch, this.#length, this.floatsPerToken],
          [capacity * this.floatsPerToken, this.floatsPerToken, 1],
          0,
        );
        copyInto(old, dst);
      });
    }
    this.#buf?.dispose();
    this.#buf = next;
    this.#capacity = capacity;
  }
}

/**
 * Options of `MultiHeadLatentAttention`.
 *
 * @example Seed the projections
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.nn.MlaOptions = { seed: 42 };
 * const a = new mg.nn.MultiHeadLatentAttention(mg.nn.makeConfig("tiny"), opts);
 * const b = new mg.nn.MultiHeadLatentAttention(mg.nn.makeConfig("tiny"), opts);
 * console.log(await a.oProj.weight.sub(b.oProj.weight).abs().max().item()); // 0
 * ```
 */
export interface MlaOptions {
  /** Seed of the weight initialisation (each projection derives its own). */
  seed?: number;
}

/**
 * Options of `MultiHeadLatentAttention.forwardCached`.
 *
 * @example The reference (expanded) decode path
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const attn = new mg.nn.MultiHeadLatentAttention(config, { seed: 0 });
 * const x = mg.randn([1, 4, config.hidden_size], { seed: 1 });
 * const opts: mg.nn.ForwardCachedOptions = { absorb: false };
 * const a = attn.forwardCached(x, mg.nn.LatentCache.forConfig(config, 1));
 * const b = attn.forwardCached(x, mg.nn.LatentCache.forConfig(config, 1), opts);
 * console.log(await a.sub(b).abs().max().item() < 1e-4); // true: same result, other contraction order
 * ```
 */
export interface ForwardCachedOptions {
  /**
   * true (default): the absorbed computation over the latent cache; false: expand k_nope and
   * v from the cached latents through kv_b_proj (the reference path, H·(d_n + d_v) floats per
   * token of temporary memory).
   */
  absorb?: boolean;
}

/**
 * Multi-head Latent Attention with HF names: `q_a_proj` → `q_a_layernorm` → `q_b_proj` (or
 * `q_proj` when `q_lora_rank` is null), `kv_a_proj_with_mqa` → `kv_a_layernorm` →
 * `kv_b_proj`, and `o_proj`; inner norms with eps 1e-6. As in HF `DeepseekV3Attention`,
 * `attention_bias` puts a bias on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj` only:
 * `q_proj`, `q_b_proj` and `kv_b_proj` never have one (so absorbing `kv_b_proj` into the
 * decode queries and output stays exact; a `kv_a_proj_with_mqa` bias is inside the cached
 * latent). RoPE from `rope_parameters` ("default" or "yarn") on q_rope and on the single
 * shared k_rope, in the pair layout of `rope_interleave`; softmax scale d_qk^−0.5, times
 * m(factor, mscale_all_dim)² under YaRN with a non-zero mscale_all_dim (as HF).
 *
 * A training `forward` given a `StepStats` (in training mode) records there the f32 [H]
 * per-head maximum pre-softmax logit over the batch and the attended pairs, as a running max
 * over the step's forwards — what MuonClip's QK-Clip reads (REFERENCE §3). The module keeps no
 * statistics of its own.
 *
 * @example MLA forward, its gradient, and the per-head max logit
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny"); // 4 heads, kv_lora_rank 32, q_lora_rank 64
 * const attn = new mg.nn.MultiHeadLatentAttention(config, { seed: 0 });
 * const x = mg.randn([2, 16, config.hidden_size], { seed: 1, requiresGrad: true });
 * const stats = new mg.nn.StepStats();
 * const y = attn.forward(x, 0, { stats }); // causal over positions 0..15
 * y.square().mean().backward();
 * console.log(y.shape, stats.maxLogits(attn)!.shape); // [2, 16, 128] [4]
 * console.log([...attn.stateDict().keys()].slice(0, 3)); // ["q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight"]
 * stats.dispose();
 * ```
 */
export class MultiHeadLatentAttention extends Module {
  /** Model width D. */
  readonly hiddenSize: number;
  /** Heads H. */
  readonly numHeads: number;
  /** q_lora_rank r_q (null: plain q_proj). */
  readonly qLoraRank: number | null;
  /** kv_lora_rank r_kv. */
  readonly kvLoraRank: number;
  /** qk_nope_head_dim d_n. */
  readonly qkNopeHeadDim: number;
  /** qk_rope_head_dim d_r. */
  readonly qkRopeHeadDim: number;
  /** v_head_dim d_v. */
  readonly vHeadDim: number;
  /** d_qk = d_n + d_r. */
  readonly qHeadDim: number;
  /** Softmax scale d_qk^−0.5 · `softmaxScaleFactor(rope_parameters)` (YaRN's mscale²). */
  readonly softmaxScale: number;
  /** RoPE base θ. */
  readonly ropeTheta: number;
  /** The rotary parameters (plain RoPE or YaRN). */
  readonly ropeParameters: RopeParameters;
  /** Interleaved (true) or half-split (false) rotary pairs (HF `rope_interleave`). */
  readonly ropeInterleave: boolean;
  /** x → r_q (null without q_lora_rank). */
  readonly qAProj: Linear | null;
  /** RMSNorm over r_q (null without q_lora_rank). */
  readonly qALayernorm: RMSNorm | null;
  /** r_q → H·d_qk (null without q_lora_rank). */
  readonly qBProj: Linear | null;
  /** x → H·d_qk (only without q_lora_rank). */
  readonly qProj: Linear | null;
  /** x → r_kv + d_r: [c | k_rope]. */
  readonly kvAProjWithMqa: Linear;
  /** RMSNorm over c (r_kv). */
  readonly kvALayernorm: RMSNorm;
  /** r_kv → H·(d_n + d_v): [k_nope | v] per head. */
  readonly kvBProj: Linear;
  /** H·d_v → D. */
  readonly oProj: Linear;
  /** Not a registered child: HF keeps its rotary embedding on the model, with no state. */
  readonly #rotary: RotaryEmbedding;

  /** Creates the layer from a config (HF initialisation: N(0, initializer_range²)). */
  constructor(config: KimiConfig, options: MlaOptions = {}) {
    super();
    validateConfig(config);
    requireRunnableRope("MultiHeadLatentAttention", config);
    const D = config.hidden_size;
    const H = config.num_attention_heads;
    this.hiddenSize = D;
    this.numHeads = H;
    this.qLoraRank = config.q_lora_rank;
    this.kvLoraRank = config.kv_lora_rank;
    this.qkNopeHeadDim = config.qk_nope_head_dim;
    this.qkRopeHeadDim = config.qk_rope_head_dim;
    this.vHeadDim = config.v_head_dim;
    this.qHeadDim = config.qk_nope_head_dim + config.qk_rope_head_dim;
    this.ropeParameters = config.rope_parameters;
    this.ropeTheta = config.rope_parameters.rope_theta;
    this.ropeInterleave = config.rope_interleave;
    this.softmaxScale = (1 / Math.sqrt(this.qHeadDim)) * softmaxScaleFactor(config.rope_parameters);
    const seed = options.seed;
    // Every weight is checked against the device's limits before the first is allocated.
    const dqk = this.qHeadDim;
    for (
      const [name, shape] of [
        ...(config.q_lora_rank === null ? [["q_proj", [H * dqk, D]] as const] : [
          ["q_a_proj", [config.q_lora_rank, D]] as const,
          ["q_b_proj", [H * dqk, config.q_lora_rank]] as const,
        ]),
        ["kv_a_proj_with_mqa", [this.kvLoraRank + this.qkRopeHeadDim, D]] as const,
        ["kv_b_proj", [H * (this.qkNopeHeadDim + this.vHeadDim), this.kvLoraRank]] as const,
        ["o_proj", [D, H * this.vHeadDim]] as const,
      ]
    ) checkAllocation(shape, "f32", `MultiHeadLatentAttention (${name}.weight)`);
    try {
      const lin = (name: string, i: number, o: number, bias = false) =>
        this.module(
          name,
          new Linear(i, o, {
            bias,
            std: config.initializer_range,
            seed: deriveSeed(seed, name),
          }),
        );
      const norm = (name: string, n: number) =>
        this.module(name, new RMSNorm(n, { eps: MLA_INNER_NORM_EPS }));
      if (config.q_lora_rank === null) {
        this.qAProj = this.qALayernorm = this.qBProj = null;
        this.qProj = lin("q_proj", D, H * this.qHeadDim);
      } else {
        this.qAProj = lin("q_a_proj", D, config.q_lora_rank, config.attention_bias);
        this.qALayernorm = norm("q_a_layernorm", config.q_lora_rank);
        this.qBProj = lin("q_b_proj", config.q_lora_rank, H * this.qHeadDim);
        this.qProj = null;
      }
      this.kvAProjWithMqa = lin(
        "kv_a_proj_with_mqa",
        D,
        this.kvLoraRank + this.qkRopeHeadDim,
        config.attention_bias,
      );
      this.kvALayernorm = norm("kv_a_layernorm", this.kvLoraRank);
      this.kvBProj = lin("kv_b_proj", this.kvLoraRank, H * (this.qkNopeHeadDim + this.vHeadDim));
      this.oProj = lin("o_proj", H * this.vHeadDim, D, config.attention_bias);
      this.#rotary = new RotaryEmbedding(this.qkRopeHeadDim, {
        rope: config.rope_parameters,
        interleaved: config.rope_interleave,
      });
    } catch (e) {
      this.dispose(); // the projections made before the error
      throw e;
    }
  }

  /**
   * Training forward: x [B, T, D] → [B, T, D], causal over the T tokens at positions
   * positionOffset..positionOffset+T−1. Differentiable in x and every weight. The attention
   * runs in the fused kernel on q = [q_nope | q_rope] and k = [k_nope | k_rope shared by the
   * heads] (d_qk wide) and v: q is made by one `ropeTail` dispatch from the head view of the
   * query projection, k and v are the column windows of one `ropeInsertShared` output
   * [k_nope | k_rope | v] made from the head view of kv_b_proj's output and
   * kv_a_proj_with_mqa's output (one dispatch), which `attentionPacked` reads as it lies and
   * whose gradient its key/value kernel writes whole (no slice gradients: tiny-K2 step −8
   * launches); their backward kernels write the projections' gradients in the projections'
   * layouts and sum d(k_rope) over the heads. With `ctx.stats` (and in training mode)
   * records the per-head max logits (f32 [H], (q·k)·scale) into it. With `residual` (f32
   * [B, T, D], the decoder layer's input), returns residual + attention, the sum formed in
   * o_proj's epilogue (`addmm`, bit-identical to a separate add).
   */
  forward(x: Tensor, positionOffset = 0, ctx: ForwardContext = {}, residual?: Tensor): Tensor {
    this.#check("MultiHeadLatentAttention.forward", x, positionOffset);
    const stats = checkStats("MultiHeadLatentAttention.forward", ctx.stats);
    const dn = this.qkNopeHeadDim, r = this.kvLoraRank;
    return scope(() => {
      // q = [q_nope | rope(q_rope)] from the whole head view of q_b_proj's output, and
      // kv = [k_nope | rope(k_rope) shared by the heads | v] from the head view of kv_b_proj's
      // output and the whole ckv = [c | k_rope]: one kernel each way, whose gradients land
      // laid out like the projections' outputs (ops/rope_mla.ts). The query and key/value
      // paths advance step by step side by side: each step's two kernels are independent and
      // of one kind, so the runtime launches them together (core/colaunch.ts), and so does
      // the backward, which runs in reverse order of recording.
      const [B, T] = x.shape;
      let qa = this.qProj ? this.qProj.forward(x) : this.qAProj!.forward(x);
      const ckv = this.kvAProjWithMqa.forward(x);
      if (this.qALayernorm) qa = this.qALayernorm.forward(qa);
      const c = this.kvALayernorm.forward(slice(ckv, 2, 0, r));
      const qProjected = this.qBProj ? this.qBProj.forward(qa) : qa;
      const kvh = this.#kvHeads(c);
      const qh = permute(reshape(qProjected, [B, T, this.numHeads, this.qHeadDim]), [0, 2, 1, 3]);
      const q = this.#rotary.forwardTail(qh, dn, positionOffset);
      const kv = this.#rotary.forwardInsertShared(kvh, dn, ckv, r, positionOffset);
      // k and v are kv's two column windows; d(kv) comes back as one tensor.
      const { out, maxLogits } = attentionPacked(q, kv, this.qHeadDim, {
        scale: this.softmaxScale,
        causal: true,
      });
      if (stats && this.training) stats.recordMaxLogits(this, maxLogits);
      return this.#output(out, residual);
    });
  }

  /**
   * Decode / prefill with a latent cache: x [B, T_new, D] holds the next tokens of each
   * sequence (positions cache.length …); their c and rotated k_rope are appended to `cache`,
   * then each new query attends every cached position ≤ its own. Returns [B, T_new, D].
   *
   * Absorbed (default): with W = kv_b_proj viewed [H, d_n + d_v, r_kv], q_abs_h = q_nope_h ·
   * W_UK_h, the query [q_abs | q_rope] attends the cached rows [c | k_rope] as ONE key head
   * shared by all heads (the attention kernel's shared-head mode), with c itself as the
   * shared value; o_h = (Σ softmax·c) · W_UV_hᵀ, then o_proj. The same softmax scale
   * (`softmaxScale`) applies (only the contraction is reordered). Runs under noGrad (decode needs no
   * backward) and records no statistics.
   */
  forwardCached(x: Tensor, cache: LatentCache, options: ForwardCachedOptions = {}): Tensor {
    const op = "MultiHeadLatentAttention.forwardCached";
    this.#check(op, x, 0);
    if (!(cache instanceof LatentCache)) {
      throw new MoongradError(op, "cache must be a LatentCache");
    }
    if (
      cache.batch !== x.shape[0] || cache.kvLoraRank !== this.kvLoraRank ||
      cache.ropeDim !== this.qkRopeHeadDim
    ) {
      throw new MoongradError(
        op,
        `cache (batch ${cache.batch}, kv_lora_rank ${cache.kvLoraRank}, rope dim ${cache.ropeDim})` +
          ` does not match x ${fmtShape(x.shape)} and the layer (kv_lora_rank ${this.kvLoraRank},` +
          ` rope dim ${this.qkRopeHeadDim})`,
      );
    }
    return noGrad(() =>
      scope(() => {
        const offset = cache.length;
        const { qNope, qRope } = this.#queries(x, offset);
        const { c, kRope } = this.#latents(x, offset);
        cache.append(c, kRope);
        const out = options.absorb ?? true
          ? this.#absorbed(qNope, qRope, cache)
          : this.#expanded(qNope, qRope, cache);
        return this.#output(out);
      })
    );
  }

  /** An empty latent cache for this layer and `batch` sequences (see `LatentCache`). */
  newCache(batch: number, options: LatentCacheOptions = {}): LatentCache {
    return new LatentCache(batch, this.kvLoraRank, this.qkRopeHeadDim, options);
  }

  /** Frees the weights and the RoPE table. */
  override dispose(): void {
    super.dispose();
    this.#rotary?.dispose(); // absent when the constructor failed before making it
  }

  #check(op: string, x: Tensor, offset: number): void {
    if (!(x instanceof Tensor)) throw new MoongradError(op, `x must be a Tensor, got ${typeof x}`);
    x.storage(op);
    if (
      x.dtype !== "f32" || x.rank !== 3 || x.shape[2] !== this.hiddenSize || x.shape[0] === 0 ||
      x.shape[1] === 0
    ) {
      throw new MoongradError(
        op,
        `x must be f32 [B, T, ${this.hiddenSize}] with B, T >= 1, got ${x.dtype} ${
          fmtShape(x.shape)
        }`,
      );
    }
    if (!Number.isInteger(offset) || offset < 0 || offset >= 2 ** 31) {
      throw new MoongradError(op, `positionOffset must be an integer >= 0, got ${offset}`);
    }
  }

  // The helpers below run inside the caller's scope(), which frees their intermediates (and
  // the unused max logits) once the forward's output exists.

  /** The queries [B, H, T, d_qk] before RoPE (a view of the projection). */
  #queryHeads(x: Tensor) {
    const [B, T] = x.shape;
    let q: Tensor;
    if (this.qProj) q = this.qProj.forward(x);
    else {
      const a = this.qAProj!.forward(x);
      q = this.qBProj!.forward(this.qALayernorm!.forward(a));
    }
    return permute(reshape(q, [B, T, this.numHeads, this.qHeadDim]), [0, 2, 1, 3]);
  }

  /** q_nope [B, H, T, d_n] (a view) and the rotated q_rope [B, H, T, d_r]. */
  #queries(x: Tensor, offset: number) {
    const qh = this.#queryHeads(x);
    const qNope = slice(qh, 3, 0, this.qkNopeHeadDim);
    const qRope = this.#rotary.forward(slice(qh, 3, this.qkNopeHeadDim, this.qHeadDim), offset);
    return { qNope, qRope };
  }

  /** The normalised latent c [B, T, r_kv] and the rotated shared key k_rope [B, T, d_r]. */
  #latents(x: Tensor, offset: number) {
    const ckv = this.kvAProjWithMqa.forward(x);
    const c = this.kvALayernorm.forward(slice(ckv, 2, 0, this.kvLoraRank));
    const kr = slice(ckv, 2, this.kvLoraRank, this.kvLoraRank + this.qkRopeHeadDim);
    const kRope = this.#rotary.forward(kr, offset);
    return { c, kRope };
  }

  /** [k_nope | v] [B, H, S, d_n + d_v] (a view) from c [B, S, r_kv] via kv_b_proj. */
  #kvHeads(c: Tensor) {
    const [B, S] = c.shape;
    const kv = this.kvBProj.forward(c);
    return permute(reshape(kv, [B, S, this.numHeads, this.qkNopeHeadDim + this.vHeadDim]), [
      0,
      2,
      1,
      3,
    ]);
  }

  /** k_nope [B, H, S, d_n] and v [B, H, S, d_v] (views) from c [B, S, r_kv] via kv_b_proj. */
  #expand(c: Tensor) {
    const dn = this.qkNopeHeadDim, w = dn + this.vHeadDim;
    const kvh = this.#kvHeads(c);
    return { kNope: slice(kvh, 3, 0, dn), v: slice(kvh, 3, dn, w) };
  }

  /** [B, H, T, d_v] → o_proj(concat over heads) [B, T, D]. */
  #output(out: Tensor, residual?: Tensor): Tensor {
    const [B, H, T, dv] = out.shape;
    const merged = reshape(permute(out, [0, 2, 1, 3]), [B, T, H * dv]);
    return this.oProj.forward(merged, residual);
  }

  #absorbed(qNope: Tensor, qRope: Tensor, cache: LatentCache) {
    const dn = this.qkNopeHeadDim, dv = this.vHeadDim, r = this.kvLoraRank;
    const W = reshape(this.kvBProj.weight, [this.numHeads, dn + dv, r]);
    const wUK = slice(W, 1, 0, dn); // [H, d_n, r_kv]
    const wUVt = transpose(slice(W, 1, dn, dn + dv), 1, 2); // [H, r_kv, d_v]
    const qAbs = matmul(qNope, wUK); // [B, H, T, r_kv]
    const q = concat([qAbs, qRope], 3); // [B, H, T, r_kv + d_r]
    const lat = unsqueeze(cache.latents(), 1); // [B, 1, S, r_kv + d_r]
    const c = slice(lat, 3, 0, r); // [B, 1, S, r_kv]
    const { out } = attention(q, lat, c, { scale: this.softmaxScale, causal: true });
    return matmul(out, wUVt); // [B, H, T, d_v]
  }

  #expanded(qNope: Tensor, qRope: Tensor, cache: LatentCache) {
    const [B, H] = qNope.shape;
    const { kNope, v } = this.#expand(cache.c());
    const S = kNope.shape[2];
    const kRope = expand(unsqueeze(cache.kRope(), 1), [B, H, S, this.qkRopeHeadDim]);
    const q = concat([qNope, qRope], 3);
    const k = concat([kNope, kRope], 3);
    const { out } = attention(q, k, v, { scale: this.softmaxScale, causal: true });
    return out;
  }
}
