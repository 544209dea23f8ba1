/**
 * metrics.jsonl: one JSON object per line. Training steps carry `loss`; evaluations carry
 * `val_loss` (step 0 is the evaluation before training, on its own line); `run.json` holds
 * what does not change per step.
 */
import { CliError } from "./errors.ts";
import { writeTextAtomic } from "./checkpoint.ts";

/** One line of metrics.jsonl. */
export interface MetricRecord {
  /** Completed optimizer steps. */
  step: number;
  /** Training loss of this step's batch (mean next-token cross-entropy, nats). */
  loss?: number;
  /** Validation loss after this step (only on evaluation steps). */
  val_loss?: number;
  /** Learning rates of this step's update. */
  lr?: { muon?: number; adamw: number };
  /** Per layer, the max pre-softmax attention logit over heads in this step's forward. */
  max_logit?: number[];
  /** Per layer, the heads whose max logit exceeded τ (clipped by MuonClip). */
  clipped_heads?: number[];
  /**
   * Per layer and head, the max pre-softmax attention logit of this step's forwards (max over
   * its micro-batches; `MuonClip.headStats()`, or the step's `StepStats` for other optimizers).
   */
  head_max_logit?: number[][];
  /** The heads QK-Clip scaled this step, with their factor γ = τ / max logit (< 1). */
  clip_gamma?: { layer: number; head: number; gamma: number }[];
  /** Global L2 norm of all gradients before clipping (`--grad-clip`). */
  grad_norm?: number;
  /** Global L2 norm of the parameter change of this step (update, decay and QK-Clip). */
  update_norm?: number;
  /** Micro-batches accumulated in this step (`--grad-accum`; absent means 1). */
  micro_batches?: number;
  /** Per MoE layer, the tokens routed to each expert in this step. */
  expert_load?: number[][];
  /** Training tokens seen so far. */
  tokens?: number;
  /** This step's throughput (tokens per second of wall time). */
  tokens_per_s?: number;
  /** Training seconds so far. */
  time_s?: number;
}

/** What run.json holds. */
export interface RunInfo {
  /** Format version. */
  version: 1;
  /** ISO time the run started. */
  created: string;
  /** Settings that shape training. */
  settings: import("./options.ts").RunSettings;
  /** The model config (HF keys). */
  config: Record<string, unknown>;
  /** Parameter counts. */
  params: { total: number; active: number };
  /**
   * Data: source, sizes, FNV-1a hash and SHA-256 of the whole text (`sha256` and `name`, the
   * default corpus's name and version, are absent in older runs).
   */
  corpus: {
    source: string;
    name?: string;
    bytes: number;
    trainBytes: number;
    valBytes: number;
    hash: string;
    sha256?: string;
  };
  /** The adapter description. */
  device: string;
  /** The trainer's command line (arguments after `deno task train`), when recorded. */
  command?: string[];
  /** `git rev-parse HEAD` of the checkout the run started from, when it could be read. */
  gitCommit?: string;
  /** Where the weights came from with `--init-from` (a checkpoint or pretrained directory). */
  initFrom?: string;
  /**
   * The tokenizer (absent in runs from before --tokenizer: bytes). Validation bits per byte =
   * val_loss / ln 2 / valBytesPerToken (bytes per target token of the validation batches).
   */
  tokenizer?: {
    name: string;
    description: string;
    vocabSize: number;
    trainTokens: number;
    valTokens: number;
    valBytesPerToken: number;
  };
}

/** The records of a metrics.jsonl and whether its last line was torn (dropped). */
export interface MetricsFile {
  /** The complete records, in file order. */
  records: MetricRecord[];
  /** True when the file ended in a partial line (a kill mid-write), which was left out. */
  torn: boolean;
}

/**
 * Parses the text of metrics.jsonl. A last line without its newline that is not valid JSON is
 * what a kill mid-append leaves: it is left out and reported as `torn`. Any other bad line is
 * a CliError naming it.
 */
export function parseMetrics(text: string, path: string): MetricsFile {
  const lines = text.split("\n");
  const tail = lines.pop()!; // "" when the file ends with a newline
  const records: MetricRecord[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      records.push(JSON.parse(line));
    } catch {
      throw new CliError(`${path}:${i + 1} is not valid JSON`);
    }
  });
  let torn = false;
  if (tail.trim()) {
    try {
      records.push(JSON.parse(tail));
    } catch {
      torn = true;
    }
  }
  return { records, torn };
}

/** Reads metrics.jsonl (missing file: no records; see parseMetrics). */
export async function readMetricsFile(path: string): Promise<MetricsFile> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { records: [], torn: false };
    throw new CliError(`cannot read ${path}: ${(e as Error).message}`);
  }
  return parseMetrics(text, path);
}

/** Reads the records of metrics.jsonl (a torn last line is left out; a bad line: CliError). */
export async function readMetrics(path: string): Promise<MetricRecord[]> {
  return (await readMetricsFile(path)).records;
}

/**
 * Rewrites metrics.jsonl with the records up to `step` (used when resuming from a checkpoint;
 * this also drops a torn last line). Returns whether a torn line was dropped.
 */
export async function truncateMetrics(path: string, step: number): Promise<boolean> {
  const { records, torn } = await readMetricsFile(path);
  const kept = records.filter((r) => r.step <= step);
  await writeTextAtomic(path, kept.map((r) => JSON.stringify(r) + "\n").join(""));
  return torn;
}

/** Appends records to metrics.jsonl. */
export async function appendMetrics(path: string, records: MetricRecord[]): Promise<void> {
  if (records.length === 0) return;
  await Deno.writeTextFile(path, records.map((r) => JSON.stringify(r) + "\n").join(""), {
    append: true,
  });
}

/** Reads run.json of a run directory (CliError when it is not one). */
export async function readRunInfo(dir: string): Promise<RunInfo> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/run.json`);
  } catch {
    throw new CliError(`${dir} is not a training run directory (no run.json)`);
  }
  try {
    return JSON.parse(text) as RunInfo;
  } catch {
    throw new CliError(`${dir}/run.json is not valid JSON`);
  }
}
