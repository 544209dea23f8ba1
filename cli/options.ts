/**
 * The trainer's flags (`deno task train --help`) and the resolved options of a run, which are
 * stored in the run directory so that `--resume` can refuse anything that would change the
 * arithmetic of the run.
 */
import { PRESETS } from "../nn/config.ts";
import {
  choiceFlag,
  type Flags,
  type FlagSpec,
  helpText,
  intFlag,
  numberFlag,
  stringFlag,
} from "./args.ts";
import { CliError } from "./errors.ts";
import { DEFAULT_CORPUS } from "./data.ts";

/** Optimizers the trainer offers. */
export const OPTIMIZERS = ["muonclip", "muon", "adamw"] as const;
/** Learning-rate schedules the trainer offers. */
export const SCHEDULES = ["cosine", "wsd", "constant"] as const;
/** Newton–Schulz coefficient schedules (`--ns-coefficients`). */
export const NS_COEFFICIENTS = ["quintic", "polar-express"] as const;
/** Newton–Schulz iterations (`--ns-method`). */
export const NS_METHODS = ["standard", "gram"] as const;

/** Defaults of a no-flag run (chosen by measurement on a 2-core CPU adapter). */
export const DEFAULTS = {
  preset: "tiny",
  steps: 32,
  batch: 4,
  seqLen: 64,
  optimizer: "muonclip" as (typeof OPTIMIZERS)[number],
  lr: 0.02,
  tau: 100,
  weightDecay: 0.1,
  schedule: "cosine" as (typeof SCHEDULES)[number],
  warmup: 4,
  seed: 1,
  evalEvery: 8,
  evalBatches: 4,
  checkpointEvery: 16,
  routerGamma: 0.01,
  tokenizer: "bytes",
  gradAccum: 1,
  gradClip: null as number | null,
  qkClipAlpha: 0.5,
  nsCoefficients: "quintic" as (typeof NS_COEFFICIENTS)[number],
  nsMethod: "standard" as (typeof NS_METHODS)[number],
};

/** The flags of `deno task train`. */
export const TRAIN_FLAGS: Record<string, FlagSpec> = {
  preset: { type: "string", arg: "NAME", default: DEFAULTS.preset, help: "model preset (tiny)" },
  steps: { type: "string", arg: "N", default: String(DEFAULTS.steps), help: "optimizer steps" },
  batch: { type: "string", arg: "N", default: String(DEFAULTS.batch), help: "sequences per step" },
  "seq-len": {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.seqLen),
    help: "tokens per sequence",
  },
  optimizer: {
    type: "string",
    arg: "NAME",
    default: DEFAULTS.optimizer,
    help: "muonclip (Muon + AdamW + QK-Clip) | muon (Muon + AdamW) | adamw",
  },
  lr: {
    type: "string",
    arg: "X",
    default: String(DEFAULTS.lr),
    help: "peak learning rate (Muon's, and AdamW's unless --adamw-lr)",
  },
  "adamw-lr": {
    type: "string",
    arg: "X",
    default: "--lr",
    help: "peak learning rate of the AdamW parameters",
  },
  tau: {
    type: "string",
    arg: "X",
    default: String(DEFAULTS.tau),
    help: "QK-Clip threshold on the max attention logit",
  },
  "weight-decay": {
    type: "string",
    arg: "X",
    default: String(DEFAULTS.weightDecay),
    help: "decoupled weight decay",
  },
  schedule: {
    type: "string",
    arg: "NAME",
    default: DEFAULTS.schedule,
    help: "cosine | wsd (warm-up, stable, last 20% decay) | constant",
  },
  warmup: {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.warmup),
    help: "linear warm-up steps",
  },
  seed: {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.seed),
    help: "seed of the initialisation and the data order",
  },
  "router-gamma": {
    type: "string",
    arg: "X",
    default: String(DEFAULTS.routerGamma),
    help: "aux-loss-free balancing: router bias step per update (K2: 1e-3 over long runs)",
  },
  data: {
    type: "string",
    arg: "FILE",
    default: `${DEFAULT_CORPUS.path}, a fixed snapshot of this repository's sources`,
    help: "train on a UTF-8 text file",
  },
  tokenizer: {
    type: "string",
    arg: "DIR|bytes",
    default: DEFAULTS.tokenizer,
    help: "bytes (vocabulary 256), or a tokenizer.json / tiktoken.model (or a directory " +
      "holding one; deno task tokenizer makes one); the model's vocab_size follows it",
  },
  "grad-accum": {
    type: "string",
    arg: "K",
    default: String(DEFAULTS.gradAccum),
    help: "micro-batches of --batch sequences per optimizer step (losses averaged: the update " +
      "equals one batch of K× the tokens; QK-Clip sees the max logit over all of them)",
  },
  "grad-clip": {
    type: "string",
    arg: "NORM",
    default: "off",
    help: "clip the global L2 norm of all gradients to NORM before each step " +
      "(the pre-clip norm is logged either way)",
  },
  "qk-clip-alpha": {
    type: "string",
    arg: "X",
    default: String(DEFAULTS.qkClipAlpha),
    help: "QK-Clip split exponent α in [0, 1]: q rows ×γ^α, k rows ×γ^(1−α) (K2: 0.5)",
  },
  "ns-coefficients": {
    type: "string",
    arg: "NAME",
    default: DEFAULTS.nsCoefficients,
    help: "Muon's Newton–Schulz coefficients: quintic (3.4445, −4.775, 2.0315) | polar-express",
  },
  "ns-method": {
    type: "string",
    arg: "NAME",
    default: DEFAULTS.nsMethod,
    help: "Newton–Schulz iteration: standard | gram (on X·Xᵀ, cheaper for wide matrices)",
  },
  config: {
    type: "string",
    arg: "FILE",
    default: "the preset",
    help: "model shape from an HF DeepseekV3-style config.json (vocab_size follows the tokenizer)",
  },
  dim: { type: "string", arg: "D", default: "preset", help: "model width (hidden_size)" },
  layers: { type: "string", arg: "N", default: "preset", help: "decoder layers" },
  heads: { type: "string", arg: "N", default: "preset", help: "attention heads" },
  experts: { type: "string", arg: "N", default: "preset", help: "routed experts per MoE layer" },
  "qk-nope-dim": {
    type: "string",
    arg: "D",
    default: "preset",
    help: "non-rotary query/key head width (qk_nope_head_dim)",
  },
  "qk-rope-dim": {
    type: "string",
    arg: "D",
    default: "preset",
    help: "rotary query/key head width (qk_rope_head_dim)",
  },
  "init-from": {
    type: "string",
    arg: "DIR",
    help: "fine-tune: start from the model weights of a run, checkpoint or pretrained directory " +
      "(config.json + model.safetensors; its shape is the model's) with a fresh optimizer at step 0",
  },
  "eval-every": {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.evalEvery),
    help: "validation loss every N steps (and at the start and end)",
  },
  "eval-batches": {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.evalBatches),
    help: "validation batches per evaluation",
  },
  "checkpoint-every": {
    type: "string",
    arg: "N",
    default: String(DEFAULTS.checkpointEvery),
    help: "checkpoint every N steps (and at the end)",
  },
  out: { type: "string", arg: "DIR", default: "runs/<date>-<time>", help: "output directory" },
  resume: {
    type: "string",
    arg: "DIR",
    help: "continue the run in DIR from its last checkpoint (same settings, same losses); " +
      "a larger --steps extends it (the lr schedule is then recomputed for the new total)",
  },
  "stop-at": {
    type: "string",
    arg: "N",
    help: "stop after step N with a checkpoint, as if interrupted (resume later)",
  },
  help: { type: "boolean", short: "h", help: "show this help" },
};

/** The --help text of `deno task train`. */
export function trainHelp(): string {
  return helpText(
    "deno task train [options]",
    [
      "Trains a small Kimi K2-style model (Multi-head Latent Attention + DeepSeekMoE, first",
      "layer dense) with MuonClip on text (bytes or BPE tokens), printing progress and writing",
      "metrics, checkpoints (with the tokenizer) and an HTML report to the output directory.",
      "Ctrl-C stops after the current step with a checkpoint; --resume continues it with the",
      "same losses.",
    ].join("\n"),
    TRAIN_FLAGS,
  );
}

/** Options that shape the arithmetic of a run (must match on --resume). */
export interface RunSettings {
  /** Model preset. */
  preset: string;
  /** Total optimizer steps. */
  steps: number;
  /** Sequences per step. */
  batch: number;
  /** Tokens per sequence. */
  seqLen: number;
  /** Optimizer. */
  optimizer: (typeof OPTIMIZERS)[number];
  /** Peak learning rate (Muon). */
  lr: number;
  /** Peak learning rate (AdamW). */
  adamwLr: number;
  /** QK-Clip threshold. */
  tau: number;
  /** Weight decay. */
  weightDecay: number;
  /** LR schedule. */
  schedule: (typeof SCHEDULES)[number];
  /** Warm-up steps. */
  warmup: number;
  /** Seed. */
  seed: number;
  /** Data file, or null for the default corpus (DEFAULT_CORPUS in data.ts). */
  data: string | null;
  /** Aux-loss-free router bias rate γ. */
  routerGamma: number;
  /** "bytes", or the tokenizer path (a resumed run uses the copy in its checkpoint). */
  tokenizer: string;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Global gradient-norm clip, or null (off). */
  gradClip: number | null;
  /** QK-Clip split exponent α. */
  qkClipAlpha: number;
  /** Muon's Newton–Schulz coefficients. */
  nsCoefficients: (typeof NS_COEFFICIENTS)[number];
  /** Muon's Newton–Schulz method. */
  nsMethod: (typeof NS_METHODS)[number];
  /** HF config.json of the model shape, or null (the preset). */
  config: string | null;
  /** hidden_size override, or null. */
  dim: number | null;
  /** num_hidden_layers override, or null. */
  layers: number | null;
  /** num_attention_heads override, or null. */
  heads: number | null;
  /** n_routed_experts override, or null. */
  experts: number | null;
  /** qk_nope_head_dim override, or null. */
  qkNopeDim: number | null;
  /** qk_rope_head_dim override, or null. */
  qkRopeDim: number | null;
}

/** Options that do not change the losses (may differ on --resume). */
export interface RunControls {
  /** Evaluate every N steps. */
  evalEvery: number;
  /** Validation batches per evaluation. */
  evalBatches: number;
  /** Checkpoint every N steps. */
  checkpointEvery: number;
  /** Output directory (undefined: a fresh one under runs/, or the resumed one). */
  out?: string;
  /** Directory to resume. */
  resume?: string;
  /** Stop after this step. */
  stopAt?: number;
  /** Fine-tune from the weights in this directory (a new run only). */
  initFrom?: string;
}

/** Flag name of each setting, for messages. */
export const SETTING_FLAGS: Record<keyof RunSettings, string> = {
  preset: "--preset",
  steps: "--steps",
  batch: "--batch",
  seqLen: "--seq-len",
  optimizer: "--optimizer",
  lr: "--lr",
  adamwLr: "--adamw-lr",
  tau: "--tau",
  weightDecay: "--weight-decay",
  schedule: "--schedule",
  warmup: "--warmup",
  seed: "--seed",
  data: "--data",
  routerGamma: "--router-gamma",
  tokenizer: "--tokenizer",
  gradAccum: "--grad-accum",
  gradClip: "--grad-clip",
  qkClipAlpha: "--qk-clip-alpha",
  nsCoefficients: "--ns-coefficients",
  nsMethod: "--ns-method",
  config: "--config",
  dim: "--dim",
  layers: "--layers",
  heads: "--heads",
  experts: "--experts",
  qkNopeDim: "--qk-nope-dim",
  qkRopeDim: "--qk-rope-dim",
};

/** Settings a run recorded before they existed take these values on resume. */
const LATER_SETTINGS: Partial<RunSettings> = {
  tokenizer: DEFAULTS.tokenizer,
  gradAccum: 1,
  gradClip: null,
  qkClipAlpha: DEFAULTS.qkClipAlpha,
  nsCoefficients: DEFAULTS.nsCoefficients,
  nsMethod: DEFAULTS.nsMethod,
  config: null,
  dim: null,
  layers: null,
  heads: null,
  experts: null,
  qkNopeDim: null,
  qkRopeDim: null,
};

/** Resolves the flags into settings (defaults filled) and controls. */
export function resolveTrainFlags(flags: Flags): {
  settings: RunSettings;
  controls: RunControls;
  given: Set<keyof RunSettings>;
} {
  const preset = stringFlag(flags, "preset") ?? DEFAULTS.preset;
  if (!(preset in PRESETS)) {
    throw new CliError(
      `--preset must be one of ${Object.keys(PRESETS).join(", ")}, got "${preset}"`,
    );
  }
  if (preset !== "tiny") {
    throw new CliError(
      `--preset ${preset} is the full-size shape (about a trillion parameters); only tiny trains here`,
    );
  }
  const lr = numberFlag(flags, "lr", DEFAULTS.lr, { min: 0, exclusiveMin: true });
  const optInt = (name: string) => flags[name] === undefined ? null : intFlag(flags, name, 1);
  const settings: RunSettings = {
    preset,
    steps: intFlag(flags, "steps", DEFAULTS.steps),
    batch: intFlag(flags, "batch", DEFAULTS.batch),
    seqLen: intFlag(flags, "seq-len", DEFAULTS.seqLen, 2),
    optimizer: choiceFlag(flags, "optimizer", OPTIMIZERS, DEFAULTS.optimizer),
    lr,
    adamwLr: numberFlag(flags, "adamw-lr", lr, { min: 0, exclusiveMin: true }),
    tau: numberFlag(flags, "tau", DEFAULTS.tau, { min: 0, exclusiveMin: true }),
    weightDecay: numberFlag(flags, "weight-decay", DEFAULTS.weightDecay, { min: 0 }),
    schedule: choiceFlag(flags, "schedule", SCHEDULES, DEFAULTS.schedule),
    warmup: intFlag(flags, "warmup", DEFAULTS.warmup, 0),
    seed: intFlag(flags, "seed", DEFAULTS.seed, 0),
    data: stringFlag(flags, "data") ?? null,
    routerGamma: numberFlag(flags, "router-gamma", DEFAULTS.routerGamma, { min: 0 }),
    tokenizer: stringFlag(flags, "tokenizer") ?? DEFAULTS.tokenizer,
    gradAccum: intFlag(flags, "grad-accum", DEFAULTS.gradAccum),
    gradClip: flags["grad-clip"] === undefined || flags["grad-clip"] === "off"
      ? null
      : numberFlag(flags, "grad-clip", 1, { min: 0, exclusiveMin: true }),
    qkClipAlpha: numberFlag(flags, "qk-clip-alpha", DEFAULTS.qkClipAlpha, { min: 0, max: 1 }),
    nsCoefficients: choiceFlag(flags, "ns-coefficients", NS_COEFFICIENTS, DEFAULTS.nsCoefficients),
    nsMethod: choiceFlag(flags, "ns-method", NS_METHODS, DEFAULTS.nsMethod),
    config: stringFlag(flags, "config") ?? null,
    dim: optInt("dim"),
    layers: optInt("layers"),
    heads: optInt("heads"),
    experts: optInt("experts"),
    qkNopeDim: optInt("qk-nope-dim"),
    qkRopeDim: optInt("qk-rope-dim"),
  };
  if (settings.seed > 0xffffffff) throw new CliError(`--seed must be < 2^32, got ${settings.seed}`);
  const maxPos = PRESETS.tiny.max_position_embeddings;
  if (settings.config === null && settings.seqLen > maxPos) {
    throw new CliError(
      `--seq-len must be <= ${maxPos} (max_position_embeddings), got ${settings.seqLen}`,
    );
  }
  const controls: RunControls = {
    evalEvery: intFlag(flags, "eval-every", DEFAULTS.evalEvery),
    evalBatches: intFlag(flags, "eval-batches", DEFAULTS.evalBatches),
    checkpointEvery: intFlag(flags, "checkpoint-every", DEFAULTS.checkpointEvery),
    out: stringFlag(flags, "out"),
    resume: stringFlag(flags, "resume"),
    stopAt: flags["stop-at"] === undefined ? undefined : intFlag(flags, "stop-at", 0),
    initFrom: stringFlag(flags, "init-from"),
  };
  if (controls.initFrom && controls.resume) {
    throw new CliError(
      "--init-from starts a new run from a model's weights; --resume continues a run: give one",
    );
  }
  const given = new Set<keyof RunSettings>();
  for (const [key, flag] of Object.entries(SETTING_FLAGS)) {
    if (flags[flag.slice(2)] !== undefined) given.add(key as keyof RunSettings);
  }
  return { settings, controls, given };
}

/**
 * The settings of a resumed run: the stored ones, after checking that every flag given now
 * agrees with them (one CliError naming the first disagreement), except `--steps`, which may
 * be larger than the stored total: the run is extended (`extendedFrom` is then the old total;
 * the trainer recomputes the learning-rate schedule for the new total and says so).
 */
export function mergeResumeSettings(
  stored: RunSettings,
  now: RunSettings,
  given: Set<keyof RunSettings>,
  dir: string,
): RunSettings {
  stored = { ...LATER_SETTINGS, ...stored } as RunSettings; // older runs
  for (const key of given) {
    if (key === "steps" && now.steps > stored.steps) continue; // extending the run
    if (stored[key] !== now[key]) {
      throw new CliError(
        `${dir} was trained with ${SETTING_FLAGS[key]} ${stored[key] ?? "(default corpus)"}, ` +
          `not ${now[key]}; a resumed run keeps the settings that shape training` +
          (key === "steps" ? " (--steps may only grow, to extend the run)" : ""),
      );
    }
  }
  return given.has("steps") && now.steps > stored.steps
    ? { ...stored, steps: now.steps }
    : { ...stored };
}
