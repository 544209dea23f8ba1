/**
 * Checkpoints of a training run, in `RUN_DIR/checkpoint/`:
 *   model.safetensors + config.json   the model, HF tensor names and config (loads in PyTorch)
 *   optimizer.safetensors             every optimizer state tensor ("<half>/<param>.<slot>")
 *   trainer_state.json                step, data position, RNG state, optimizer step counts
 *   tokenizer.json (+ tokenizer_config.json)  the run's tokenizer (Hugging Face format)
 * A checkpoint is written into a fresh temporary directory and swapped in by renames, so a
 * crash leaves either the old or the new checkpoint, never a mix.
 */
import type { Tensor } from "../core/tensor.ts";
import { toHfConfig } from "../nn/hf_config.ts";
import type { KimiLM } from "../nn/model.ts";
import { loadInto, loadSafetensors, saveSafetensors } from "../io/mod.ts";
import type { OptimizerStateDict } from "../optim/mod.ts";
import type { SamplerState } from "./data.ts";
import { CliError } from "./errors.ts";
import type { RunSettings } from "./options.ts";

/** Name of the checkpoint directory inside a run directory. */
export const CHECKPOINT = "checkpoint";

/** What trainer_state.json holds. */
export interface TrainerState {
  /** Format version. */
  version: 1;
  /** Completed optimizer steps. */
  step: number;
  /** The batch sampler's position and RNG state. */
  sampler: SamplerState;
  /** Optimizer halves without their tensors (kind, step, groups, per-parameter steps). */
  optimizer: Record<string, Omit<OptimizerStateDict, "state">>;
  /** The settings of the run (checked on resume). */
  settings: RunSettings;
  /** Hash of the training text (FNV-1a, 16 hex digits; compared on resume). */
  dataHash: string;
  /** SHA-256 of the training text (absent in checkpoints written before it was recorded). */
  dataSha256?: string;
  /** Training seconds so far (for tokens/s and ETA across sessions). */
  elapsedSeconds: number;
}

/** Writes `text` to `path` atomically (temporary file + rename). */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Saves a checkpoint of `model`, the optimizer halves, `state` and the tokenizer (when given)
 * into `runDir/checkpoint`.
 */
export async function saveCheckpoint(
  runDir: string,
  model: KimiLM,
  optimizer: Record<string, OptimizerStateDict>,
  state: TrainerState,
  tokenizer?: { save(dir: string): Promise<void> },
): Promise<void> {
  const final = `${runDir}/${CHECKPOINT}`;
  const tmp = `${runDir}/.${CHECKPOINT}-tmp-${crypto.randomUUID().slice(0, 8)}`;
  const old = `${runDir}/.${CHECKPOINT}-old`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await saveSafetensors(`${tmp}/model.safetensors`, model, {
      config: toHfConfig(model.config),
      metadata: { step: String(state.step) },
    });
    const tensors = new Map<string, Tensor>();
    for (const [half, sd] of Object.entries(optimizer)) {
      for (const [k, t] of sd.state) tensors.set(`${half}/${k}`, t);
    }
    await saveSafetensors(`${tmp}/optimizer.safetensors`, tensors);
    await Deno.writeTextFile(`${tmp}/trainer_state.json`, JSON.stringify(state, null, 1) + "\n");
    await tokenizer?.save(tmp);
    if (await exists(old)) await Deno.remove(old, { recursive: true });
    if (await exists(final)) await Deno.rename(final, old);
    await Deno.rename(tmp, final);
    await Deno.remove(old, { recursive: true }).catch(() => {});
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/**
 * The checkpoint directory of `dir`: `dir` itself when it holds trainer_state.json, else
 * `dir/checkpoint` (or the previous one a crash mid-swap left as `.checkpoint-old`).
 */
export async function findCheckpoint(dir: string): Promise<string> {
  if (!(await exists(dir))) throw new CliError(`--resume ${dir}: no such directory`);
  for (const c of [dir, `${dir}/${CHECKPOINT}`, `${dir}/.${CHECKPOINT}-old`]) {
    if (await exists(`${c}/trainer_state.json`)) return c;
  }
  throw new CliError(`--resume ${dir}: no checkpoint there (expected ${dir}/${CHECKPOINT}/)`);
}

/** Reads trainer_state.json of a checkpoint directory. */
export async function readTrainerState(ckpt: string): Promise<TrainerState> {
  try {
    const s = JSON.parse(await Deno.readTextFile(`${ckpt}/trainer_state.json`)) as TrainerState;
    if (s.version !== 1 || typeof s.step !== "number" || !s.settings || !s.sampler) {
      throw new Error("unrecognised contents");
    }
    return s;
  } catch (e) {
    throw new CliError(
      `${ckpt}/trainer_state.json is not a trainer checkpoint (${(e as Error).message})`,
    );
  }
}

/** Loads the model weights and the optimizer state of a checkpoint into `model` / halves. */
export async function loadCheckpointTensors(
  ckpt: string,
  model: KimiLM,
  state: TrainerState,
): Promise<Record<string, OptimizerStateDict>> {
  try {
    await loadInto(model, `${ckpt}/model.safetensors`);
  } catch (e) {
    throw new CliError(
      `${ckpt}/model.safetensors does not match the model: ${(e as Error).message}`,
    );
  }
  const tensors = await loadSafetensors(`${ckpt}/optimizer.safetensors`);
  const halves: Record<string, OptimizerStateDict> = {};
  for (const [half, meta] of Object.entries(state.optimizer)) {
    const own = new Map<string, Tensor>();
    for (const [k, t] of tensors) {
      if (k.startsWith(`${half}/`)) own.set(k.slice(half.length + 1), t);
    }
    halves[half] = { ...meta, state: own };
  }
  return halves;
}

/** Frees the tensors of optimizer halves. */
export function disposeHalves(halves: Record<string, OptimizerStateDict>): void {
  for (const sd of Object.values(halves)) for (const t of sd.state.values()) t.dispose();
}

/** The optimizer halves without tensors, for trainer_state.json. */
export function halvesMeta(
  halves: Record<string, OptimizerStateDict>,
): Record<string, Omit<OptimizerStateDict, "state">> {
  const out: Record<string, Omit<OptimizerStateDict, "state">> = {};
  for (const [half, { state: _state, ...meta }] of Object.entries(halves)) out[half] = meta;
  return out;
}
