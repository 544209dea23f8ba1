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
    help: "continue the run in DIR from its last checkpoint (same settings, same losses)",
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
  };
  if (settings.seed > 0xffffffff) throw new CliError(`--seed must be < 2^32, got ${settings.seed}`);
  const maxPos = PRESETS.tiny.max_position_embeddings;
  if (settings.seqLen > maxPos) {
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
  };
  const given = new Set<keyof RunSettings>();
  for (const [key, flag] of Object.entries(SETTING_FLAGS)) {
    if (flags[flag.slice(2)] !== undefined) given.add(key as keyof RunSettings);
  }
  return { settings, controls, given };
}

/**
 * The settings of a resumed run: the stored ones, after checking that every flag given now
 * agrees with them (one CliError naming the first disagreement).
 */
export function mergeResumeSettings(
  stored: RunSettings,
  now: RunSettings,
  given: Set<keyof RunSettings>,
  dir: string,
): RunSettings {
  stored = { ...stored, tokenizer: stored.tokenizer ?? DEFAULTS.tokenizer }; // older runs
  for (const key of given) {
    if (stored[key] !== now[key]) {
      throw new CliError(
        `${dir} was trained with ${SETTING_FLAGS[key]} ${stored[key] ?? "(default corpus)"}, ` +
          `not ${now[key]}; a resumed run keeps the settings that shape training`,
      );
    }
  }
  return { ...stored };
}
