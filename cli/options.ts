/**
 * The trainer's flags (`deno task train --help`) and the settings of a run: one table
 * (RUN_SETTINGS) says how each setting is read from its flag and what `--resume` does with it.
 * Every setting is stored in run.json and in each checkpoint, and `--resume` restores them all:
 * a flag given on resume must repeat a setting that shapes the arithmetic ("fixed"), and may
 * change one that does not ("override": --eval-every, --checkpoint-every).
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
    help: "continue the run in DIR from its last checkpoint with all its settings and the " +
      "same losses (--eval-every and --checkpoint-every may change; a larger --steps extends " +
      "the run, the lr schedule then recomputed for the new total; a run stopped before its " +
      "first checkpoint starts again from step 0)",
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

/**
 * Every setting of a run: what `run.json` and each checkpoint's trainer_state.json store, and
 * what `--resume` restores (one entry per flag in RUN_SETTINGS).
 */
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
  /** Evaluate every N steps. */
  evalEvery: number;
  /** Validation batches per evaluation. */
  evalBatches: number;
  /** Checkpoint every N steps. */
  checkpointEvery: number;
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

/** Options of one invocation only (never stored). */
export interface RunControls {
  /** Output directory (undefined: a fresh one under runs/, or the resumed one). */
  out?: string;
  /** Directory to resume. */
  resume?: string;
  /** Stop after this step. */
  stopAt?: number;
  /** Fine-tune from the weights in this directory (a new run only). */
  initFrom?: string;
}

/**
 * How a setting behaves on `--resume`: "fixed" settings shape the arithmetic (losses,
 * weights, what a validation loss means) and a flag given on resume must repeat the stored
 * value; "override" settings change nothing that is computed, so a flag given on resume
 * replaces the stored value from then on (and the change is reported); "extend" (--steps) may
 * only grow: a larger value extends the run (the schedule is recomputed for the new total).
 */
export type ResumePolicy = "fixed" | "override" | "extend";

/** One run setting: its flag, how it is read, and what `--resume` does with it. */
export interface SettingSpec<T> {
  /** The flag (a TRAIN_FLAGS key, without "--"). */
  flag: string;
  /**
   * Reads the setting from `flags` (its default when the flag is absent); `s` holds the
   * settings listed before it in RUN_SETTINGS (e.g. --adamw-lr defaults to --lr).
   */
  parse(flags: Flags, s: Partial<RunSettings>): T;
  /** What `--resume` does with a flag that disagrees with the stored value. */
  resume: ResumePolicy;
  /** How the value reads in messages (default: String). */
  show?(v: T): string;
}

/** The spec of each run setting; the key order is the order they are read in. */
export type SettingsTable = { [K in keyof RunSettings]: SettingSpec<RunSettings[K]> };

const fixed = <T>(flag: string, parse: (f: Flags, s: Partial<RunSettings>) => T) => ({
  flag,
  parse,
  resume: "fixed" as const,
});

/** A model-shape flag: a positive integer, or null (the preset's / config's value). */
const shapeSetting = (flag: string): SettingSpec<number | null> => ({
  ...fixed(flag, (f) => f[flag] === undefined ? null : intFlag(f, flag, 1)),
  show: (v) => v === null ? "(preset)" : String(v),
});

/**
 * Every setting of a run, read from its flag; run.json and trainer_state.json store them all
 * and `--resume` restores them all. A new trainer flag that a run should keep adds a field to
 * RunSettings and an entry here (the type requires one per field); nothing else changes.
 * A checkpoint written before a setting existed resumes with its default.
 */
export const RUN_SETTINGS: SettingsTable = {
  // Before --seq-len, whose limit is the preset's unless a config.json sets the shape.
  config: fixed("config", (f) => stringFlag(f, "config") ?? null),
  preset: fixed("preset", (f) => {
    const preset = stringFlag(f, "preset") ?? DEFAULTS.preset;
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
    return preset;
  }),
  // The cosine and WSD schedules stretch over all steps, so --steps is part of the arithmetic;
  // a resume may extend it (the trainer says what that does to the schedule).
  steps: { flag: "steps", parse: (f) => intFlag(f, "steps", DEFAULTS.steps), resume: "extend" },
  batch: fixed("batch", (f) => intFlag(f, "batch", DEFAULTS.batch)),
  seqLen: fixed("seq-len", (f, s) => {
    const v = intFlag(f, "seq-len", DEFAULTS.seqLen, 2);
    const maxPos = PRESETS.tiny.max_position_embeddings;
    // With --config the trainer checks its max_position_embeddings instead.
    if (!s.config && v > maxPos) {
      throw new CliError(`--seq-len must be <= ${maxPos} (max_position_embeddings), got ${v}`);
    }
    return v;
  }),
  optimizer: fixed("optimizer", (f) => choiceFlag(f, "optimizer", OPTIMIZERS, DEFAULTS.optimizer)),
  lr: fixed("lr", (f) => numberFlag(f, "lr", DEFAULTS.lr, { min: 0, exclusiveMin: true })),
  adamwLr: fixed(
    "adamw-lr",
    (f, s) => numberFlag(f, "adamw-lr", s.lr ?? DEFAULTS.lr, { min: 0, exclusiveMin: true }),
  ),
  tau: fixed("tau", (f) => numberFlag(f, "tau", DEFAULTS.tau, { min: 0, exclusiveMin: true })),
  weightDecay: fixed(
    "weight-decay",
    (f) => numberFlag(f, "weight-decay", DEFAULTS.weightDecay, { min: 0 }),
  ),
  schedule: fixed("schedule", (f) => choiceFlag(f, "schedule", SCHEDULES, DEFAULTS.schedule)),
  warmup: fixed("warmup", (f) => intFlag(f, "warmup", DEFAULTS.warmup, 0)),
  seed: fixed("seed", (f) => {
    const v = intFlag(f, "seed", DEFAULTS.seed, 0);
    if (v > 0xffffffff) throw new CliError(`--seed must be < 2^32, got ${v}`);
    return v;
  }),
  data: {
    ...fixed("data", (f) => stringFlag(f, "data") ?? null),
    show: (v) => v ?? "(default corpus)",
  },
  routerGamma: fixed(
    "router-gamma",
    (f) => numberFlag(f, "router-gamma", DEFAULTS.routerGamma, { min: 0 }),
  ),
  tokenizer: fixed("tokenizer", (f) => stringFlag(f, "tokenizer") ?? DEFAULTS.tokenizer),
  // The validation batches define what a validation loss means: changing them mid-run would
  // make the curve jump.
  evalBatches: fixed("eval-batches", (f) => intFlag(f, "eval-batches", DEFAULTS.evalBatches)),
  evalEvery: {
    flag: "eval-every",
    parse: (f) => intFlag(f, "eval-every", DEFAULTS.evalEvery),
    resume: "override",
  },
  checkpointEvery: {
    flag: "checkpoint-every",
    parse: (f) => intFlag(f, "checkpoint-every", DEFAULTS.checkpointEvery),
    resume: "override",
  },
  gradAccum: fixed("grad-accum", (f) => intFlag(f, "grad-accum", DEFAULTS.gradAccum)),
  gradClip: {
    ...fixed(
      "grad-clip",
      (f) =>
        f["grad-clip"] === undefined || f["grad-clip"] === "off"
          ? null
          : numberFlag(f, "grad-clip", 1, { min: 0, exclusiveMin: true }),
    ),
    show: (v) => v === null ? "off" : String(v),
  },
  qkClipAlpha: fixed(
    "qk-clip-alpha",
    (f) => numberFlag(f, "qk-clip-alpha", DEFAULTS.qkClipAlpha, { min: 0, max: 1 }),
  ),
  nsCoefficients: fixed(
    "ns-coefficients",
    (f) => choiceFlag(f, "ns-coefficients", NS_COEFFICIENTS, DEFAULTS.nsCoefficients),
  ),
  nsMethod: fixed("ns-method", (f) => choiceFlag(f, "ns-method", NS_METHODS, DEFAULTS.nsMethod)),
  dim: shapeSetting("dim"),
  layers: shapeSetting("layers"),
  heads: shapeSetting("heads"),
  experts: shapeSetting("experts"),
  qkNopeDim: shapeSetting("qk-nope-dim"),
  qkRopeDim: shapeSetting("qk-rope-dim"),
};

/** Flag name of each setting, for messages ("--seq-len"). */
export function settingFlag(key: keyof RunSettings): string {
  return `--${RUN_SETTINGS[key].flag}`;
}

function show<K extends keyof RunSettings>(key: K, v: RunSettings[K]): string {
  const spec = RUN_SETTINGS[key] as SettingSpec<RunSettings[K]>;
  return spec.show ? spec.show(v) : String(v);
}

/** Resolves the flags of a new run into its settings (defaults filled) and controls. */
export function resolveTrainFlags(flags: Flags): { settings: RunSettings; controls: RunControls } {
  const s: Partial<RunSettings> = {};
  for (const key of Object.keys(RUN_SETTINGS) as (keyof RunSettings)[]) {
    (s as Record<string, unknown>)[key] = RUN_SETTINGS[key].parse(flags, s);
  }
  return { settings: s as RunSettings, controls: resolveControls(flags) };
}

/** The per-invocation options (--out, --resume, --stop-at). */
export function resolveControls(flags: Flags): RunControls {
  const c: RunControls = {
    out: stringFlag(flags, "out"),
    resume: stringFlag(flags, "resume"),
    stopAt: flags["stop-at"] === undefined ? undefined : intFlag(flags, "stop-at", 0),
    initFrom: stringFlag(flags, "init-from"),
  };
  if (c.initFrom && c.resume) {
    throw new CliError(
      "--init-from starts a new run from a model's weights; --resume continues a run: give one",
    );
  }
  return c;
}

/** What `--resume` made of the stored settings and the flags given now. */
export interface ResumedSettings {
  /** The settings the run continues with. */
  settings: RunSettings;
  /** "--flag old → new" for each override setting a flag changed. */
  changed: string[];
  /**
   * Settings the checkpoint did not store (written before they existed) and no flag gave now,
   * at their default.
   */
  defaulted: string[];
  /** Set when a larger --steps extends the run: the stored total. */
  extendedFrom?: number;
}

/**
 * The settings of a resumed run: every stored setting restored (a setting the checkpoint
 * predates takes its flag, else its default); a flag given now must repeat a "fixed" setting
 * (else one CliError naming the flag) and replaces an "override" one; a larger --steps
 * extends the run (`extendedFrom`).
 */
export function resumeSettings(
  stored: Partial<RunSettings>,
  flags: Flags,
  dir: string,
): ResumedSettings {
  const s: Partial<RunSettings> = {};
  const changed: string[] = [];
  const defaulted: string[] = [];
  let extendedFrom: number | undefined;
  const set = (k: keyof RunSettings, v: unknown) => (s as Record<string, unknown>)[k] = v;
  for (const key of Object.keys(RUN_SETTINGS) as (keyof RunSettings)[]) {
    const spec = RUN_SETTINGS[key];
    const was = stored?.[key];
    const given = flags[spec.flag] !== undefined;
    if (was === undefined) {
      // Not recorded (a checkpoint from before the setting existed): the flag, else the default.
      const v = spec.parse(given ? flags : {}, s);
      if (!given) defaulted.push(`${settingFlag(key)} ${show(key, v)}`);
      set(key, v);
      continue;
    }
    if (!given) {
      set(key, was);
      continue;
    }
    const now = spec.parse(flags, s);
    if (now !== was) {
      if (spec.resume === "extend" && typeof now === "number" && now > (was as number)) {
        extendedFrom = was as number;
        changed.push(`${settingFlag(key)} ${show(key, was)} → ${show(key, now)} (extended)`);
        set(key, now);
        continue;
      }
      if (spec.resume !== "override") {
        throw new CliError(
          `${dir} was trained with ${settingFlag(key)} ${show(key, was)}, not ${show(key, now)}; ` +
            "a resumed run keeps the settings that shape training" +
            (spec.resume === "extend"
              ? ` (${settingFlag(key)} may only grow, to extend the run)`
              : ""),
        );
      }
      changed.push(`${settingFlag(key)} ${show(key, was)} → ${show(key, now)}`);
    }
    set(key, now);
  }
  return { settings: s as RunSettings, changed, defaulted, extendedFrom };
}
