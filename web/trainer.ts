/**
 * The live page's training loop: the tiny Kimi K2-style model trained on byte-level text with
 * MuonClip (or Muon + AdamW, or AdamW) through the library's public API, one `step()` at a
 * time, each returning what the charts draw: loss, per-layer per-head max attention logits,
 * heads over τ, expert load per MoE layer and throughput. Mirrors `deno task train`
 * (cli/train.ts) and shares its data pipeline (cli/data.ts).
 */
import * as mg from "../mod.ts";
import { type Batch, BatchSampler, splitCorpus, validationBatches } from "../cli/data.ts";

/** Optimizers the page offers (as `deno task train --optimizer`). */
export const OPTIMIZERS = ["muonclip", "muon", "adamw"] as const;
/** One of OPTIMIZERS. */
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** What shapes a run (the page's controls). */
export interface TrainSettings {
  /** muonclip | muon | adamw. */
  optimizer: OptimizerName;
  /** Peak learning rate (Muon's and AdamW's). */
  lr: number;
  /** QK-Clip threshold τ on the max pre-softmax logit. */
  tau: number;
  /** Optimizer steps. */
  steps: number;
  /** Sequences per step. */
  batch: number;
  /** Tokens (bytes) per sequence. */
  seqLen: number;
  /** Evaluate the validation loss every this many steps (and at the end). */
  evalEvery: number;
  /** Seed of the weights and of the batch order. */
  seed: number;
}

/** Defaults sized for WebGPU on a CPU (SwiftShader): a few steps per second at best. */
export const DEFAULT_SETTINGS: Readonly<TrainSettings> = Object.freeze({
  optimizer: "muonclip",
  lr: 0.02,
  tau: 10,
  steps: 100,
  batch: 2,
  seqLen: 64,
  evalEvery: 10,
  seed: 1,
});

/** What one optimizer step reports. */
export interface StepRecord {
  /** Completed steps. */
  step: number;
  /** Training loss of the step's batch (nats). */
  loss: number;
  /** Validation loss after this step (evaluation steps only). */
  valLoss?: number;
  /** Max pre-softmax attention logit, per layer and head, in this step's forward. */
  maxLogits: number[][];
  /** Per layer, heads whose max logit exceeded τ (clipped when the optimizer is muonclip). */
  overTau: number[];
  /** Per MoE layer, the share of routed (token, expert) pairs each expert received. */
  load: number[][];
  /** Learning rate of this step's update. */
  lr: number;
  /** This step's throughput (tokens per second of wall time, readback included). */
  tokensPerSecond: number;
}

/** The trainer's optimizer behind one interface. */
interface StepOptimizer {
  step(stats: mg.nn.StepStats): Promise<void>;
  zeroGrad(): void;
  dispose(): void;
}

/** The optimizer the settings name, with the CLI's schedule (warm-up, cosine to 10%). */
function makeOptimizer(
  model: mg.nn.KimiLM,
  s: TrainSettings,
): { opt: StepOptimizer; lr: mg.optim.LrSchedule } {
  const warmupSteps = Math.min(4, s.steps - 1);
  const lr = mg.optim.cosineSchedule({
    peak: s.lr,
    warmupSteps,
    totalSteps: s.steps,
    minLr: s.lr * 0.1,
  });
  const weightDecay = 0.1;
  const opt = s.optimizer === "adamw"
    ? new mg.optim.AdamW(model, { lr, weightDecay })
    : s.optimizer === "muon"
    ? new mg.optim.MuonWithAdamW(model, { muon: { lr, weightDecay }, adamw: { lr, weightDecay } })
    : new mg.optim.MuonClip(model, { lr, tau: s.tau, weightDecay });
  return { opt, lr };
}

function toTensors(b: Batch, seqLen: number): [mg.Tensor, mg.Tensor] {
  const shape = [b.ids.length / seqLen, seqLen];
  return [
    mg.tensor(b.ids, { shape, dtype: "i32" }),
    mg.tensor(b.targets, { shape, dtype: "i32" }),
  ];
}

/** One training run: the model, its optimizer and the data, stepped by the caller. */
export class Trainer {
  /** The settings of this run. */
  readonly settings: TrainSettings;
  /** The model. */
  readonly model: mg.nn.KimiLM;
  /** Training / validation bytes. */
  readonly sizes: { train: number; val: number };
  /** Index of each MoE layer (the others have a dense MLP). */
  readonly moeLayerIds: number[];
  /** Completed steps. */
  step = 0;
  readonly #opt: StepOptimizer;
  readonly #lr: mg.optim.LrSchedule;
  readonly #sampler: BatchSampler;
  readonly #val: Batch[];

  /** Builds the model and optimizer; throws when the text is too short for seqLen. */
  constructor(text: Uint8Array, settings: TrainSettings) {
    this.settings = settings;
    const corpus = splitCorpus(text, settings.seqLen, "the text");
    this.sizes = { train: corpus.train.length, val: corpus.val.length };
    this.model = new mg.nn.KimiLM("tiny", { seed: settings.seed });
    this.moeLayerIds = [...this.model.model.layers].flatMap((l, i) =>
      l.mlp instanceof mg.nn.DeepseekMoE ? [i] : []
    );
    ({ opt: this.#opt, lr: this.#lr } = makeOptimizer(this.model, settings));
    this.#sampler = new BatchSampler(corpus.train, settings.batch, settings.seqLen, settings.seed);
    this.#val = validationBatches(corpus.val, settings.batch, settings.seqLen, 2);
  }

  /** Parameter counts of the model. */
  get params(): { total: number; active: number } {
    return mg.nn.parameterCounts(this.model.config);
  }

  /** Mean loss over the fixed validation batches (no gradients, no effect on QK-Clip). */
  async evaluate(): Promise<number> {
    this.model.eval();
    try {
      const losses = mg.noGrad(() =>
        this.#val.map((b) => {
          const [x, y] = toTensors(b, this.settings.seqLen);
          const l = this.model.loss(x, y);
          x.dispose();
          y.dispose();
          return l;
        })
      );
      const vals = await Promise.all(losses.map((l) => l.item()));
      for (const l of losses) l.dispose();
      return vals.reduce((a, b) => a + b, 0) / vals.length;
    } finally {
      this.model.train();
    }
  }

  /** One optimizer step (forward, backward, update, QK-Clip, router bias) and its numbers. */
  async trainStep(): Promise<StepRecord> {
    const s = this.settings;
    const t0 = performance.now();
    const lr = this.#lr(this.step);
    const [x, y] = toTensors(this.#sampler.next(), s.seqLen);
    const stats = new mg.nn.StepStats();
    let lossValue: number, logits: Float32Array[], loads: Int32Array[];
    try {
      const loss = this.model.loss(x, y, { stats });
      x.dispose();
      y.dispose();
      loss.backward();
      await this.#opt.step(stats);
      this.model.updateRouterBias(stats, 0.01);
      let read;
      [lossValue, read] = await Promise.all([loss.item(), stats.read(this.model)]);
      ({ maxLogits: logits, loads } = read);
      loss.dispose();
    } finally {
      stats.dispose();
    }
    this.#opt.zeroGrad();
    this.step++;
    if (!Number.isFinite(lossValue)) {
      throw new Error(`the loss became ${lossValue} at step ${this.step}; try a lower lr`);
    }
    const maxLogits = logits.map((l) => Array.from(l));
    const rec: StepRecord = {
      step: this.step,
      loss: lossValue,
      maxLogits,
      overTau: maxLogits.map((l) => l.filter((v) => v > s.tau).length),
      load: loads.map((l) => {
        const counts = Array.from(l as ArrayLike<number>);
        const total = counts.reduce((a, b) => a + b, 0) || 1;
        return counts.map((v) => v / total);
      }),
      lr,
      tokensPerSecond: (s.batch * s.seqLen) / ((performance.now() - t0) / 1000),
    };
    if (this.step % s.evalEvery === 0 || this.step === s.steps) {
      rec.valLoss = await this.evaluate();
    }
    return rec;
  }

  /**
   * Generates `maxTokens` bytes after `prompt` with the latent KV cache (`model.generate`),
   * calling `onText` with the decoded text so far. Returns the text and the bytes generated.
   */
  async sample(
    prompt: string,
    options: { maxTokens: number; temperature: number; seed: number },
    onText: (text: string) => void,
  ): Promise<{ text: string; bytes: number }> {
    const bytes = new TextEncoder().encode(prompt.length ? prompt : "\n");
    const ids = mg.tensor(Int32Array.from(bytes), { shape: [1, bytes.length], dtype: "i32" });
    const decoder = new TextDecoder();
    let text = "";
    let out: number[][] = [[]];
    this.model.eval();
    try {
      out = await this.model.generate(ids, {
        maxNewTokens: options.maxTokens,
        temperature: options.temperature,
        topK: 40,
        seed: options.seed,
        onToken: (t) => {
          text += decoder.decode(new Uint8Array([t[0]]), { stream: true });
          onText(text);
        },
      });
    } finally {
      this.model.train();
      ids.dispose();
    }
    text += decoder.decode();
    onText(text);
    return { text, bytes: out[0].length };
  }

  /** Frees the model and the optimizer state. */
  dispose(): void {
    this.#opt.dispose();
    this.model.dispose();
  }
}
