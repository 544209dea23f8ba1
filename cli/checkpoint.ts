/**
 * Checkpoints of a training run, in `RUN_DIR/checkpoint/`:
 *   model.safetensors + config.json   the model, HF tensor names and config (loads in PyTorch)
 *   optimizer.safetensors             every optimizer state tensor ("<half>/<param>.<slot>")
 *   tokenizer.json (+ tokenizer_config.json)  the run's tokenizer (Hugging Face format)
 *   trainer_state.json                step, data position, RNG state, optimizer step counts,
 *                                     every run setting, and the SHA-256 of each file above
 * Both safetensors files carry the step in their `__metadata__`, and trainer_state.json
 * carries a SHA-256 of itself (`checksum`, over its JSON without that field), so a resume
 * refuses a checkpoint whose files disagree on the step, were edited, truncated or have a
 * flipped bit (`verifyCheckpoint`: reads and hashes every file, ~14 MB for tiny, ~60 ms).
 *
 * A checkpoint is written into a fresh `.checkpoint-tmp-*` directory (trainer_state.json
 * last) and swapped in by renames: `checkpoint` → `.checkpoint-old`, tmp → `checkpoint`, then
 * `.checkpoint-old` is removed. A kill at any point leaves a complete `checkpoint` or a
 * complete `.checkpoint-old` (the resume falls back to it), never a mix; `removeStale` clears
 * what such a kill leaves behind.
 */
import type { Tensor } from "../core/tensor.ts";
import { toHfConfig } from "../nn/hf_config.ts";
import type { KimiLM } from "../nn/model.ts";
import { decodeSafetensors, loadInto, loadSafetensors, saveSafetensors } from "../io/mod.ts";
import type { OptimizerStateDict } from "../optim/mod.ts";
import { type SamplerState, sha256Hex } from "./data.ts";
import { CliError } from "./errors.ts";
import type { RunSettings } from "./options.ts";

/** Name of the checkpoint directory inside a run directory. */
export const CHECKPOINT = "checkpoint";
/** Name of the trainer state file inside a checkpoint directory. */
export const STATE_FILE = "trainer_state.json";
/** Files every checkpoint holds besides trainer_state.json (with their SHA-256 recorded). */
export const CHECKPOINT_FILES = ["model.safetensors", "optimizer.safetensors"] as const;

/** What trainer_state.json holds. */
export interface TrainerState {
  /** Format version (1: without `files` and `checksum`; read for older runs). */
  version: 1 | 2;
  /** Completed optimizer steps. */
  step: number;
  /** The batch sampler's position and RNG state. */
  sampler: SamplerState;
  /** Optimizer halves without their tensors (kind, step, groups, per-parameter steps). */
  optimizer: Record<string, Omit<OptimizerStateDict, "state">>;
  /** Every setting of the run (restored on resume). */
  settings: RunSettings;
  /** Hash of the training text (FNV-1a, 16 hex digits; compared on resume). */
  dataHash: string;
  /** SHA-256 of the training text (absent in checkpoints written before it was recorded). */
  dataSha256?: string;
  /** Training seconds so far (for tokens/s and ETA across sessions). */
  elapsedSeconds: number;
  /** SHA-256 (hex) of every other file of the checkpoint, by file name (version 2). */
  files?: Record<string, string>;
  /** SHA-256 of this state's JSON without `checksum` (version 2). */
  checksum?: string;
}

/** What the trainer hands to `saveCheckpoint` (the file hashes and checksum are added there). */
export type TrainerStateInput = Omit<TrainerState, "version" | "files" | "checksum">;

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

/** SHA-256 of the JSON of `state` without its `checksum` field. */
function stateChecksum(state: TrainerState): Promise<string> {
  return sha256Hex(new TextEncoder().encode(JSON.stringify({ ...state, checksum: undefined })));
}

/**
 * Saves a checkpoint of `model`, the optimizer halves, `state` and the tokenizer (when given)
 * into `runDir/checkpoint`: both safetensors files record `state.step`, trainer_state.json
 * records the SHA-256 of every file and its own checksum.
 */
export async function saveCheckpoint(
  runDir: string,
  model: KimiLM,
  optimizer: Record<string, OptimizerStateDict>,
  input: TrainerStateInput,
  tokenizer?: { save(dir: string): Promise<void> },
): Promise<void> {
  const final = `${runDir}/${CHECKPOINT}`;
  const tmp = `${runDir}/.${CHECKPOINT}-tmp-${crypto.randomUUID().slice(0, 8)}`;
  const old = `${runDir}/.${CHECKPOINT}-old`;
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const metadata = { step: String(input.step) };
    await saveSafetensors(`${tmp}/model.safetensors`, model, {
      config: toHfConfig(model.config),
      metadata,
    });
    const tensors = new Map<string, Tensor>();
    for (const [half, sd] of Object.entries(optimizer)) {
      for (const [k, t] of sd.state) tensors.set(`${half}/${k}`, t);
    }
    await saveSafetensors(`${tmp}/optimizer.safetensors`, tensors, { metadata });
    await tokenizer?.save(tmp);
    const files: Record<string, string> = {};
    const names: string[] = [];
    for await (const e of Deno.readDir(tmp)) if (e.isFile) names.push(e.name);
    for (const name of names.sort()) {
      files[name] = await sha256Hex(await Deno.readFile(`${tmp}/${name}`));
    }
    const state: TrainerState = { version: 2, ...input, files };
    state.checksum = await stateChecksum(state);
    await Deno.writeTextFile(`${tmp}/${STATE_FILE}`, JSON.stringify(state, null, 1) + "\n");
    // At every moment `checkpoint` or `.checkpoint-old` is complete: the old one is removed
    // only while `checkpoint` exists, and `checkpoint` moves aside only once tmp is complete.
    if (await exists(final)) {
      await Deno.remove(old, { recursive: true }).catch(() => {});
      await Deno.rename(final, old);
    }
    await Deno.rename(tmp, final);
    await Deno.remove(old, { recursive: true }).catch(() => {});
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Whether `path` exists and is a directory (CliError naming `what` when it is a file). */
export async function isDirectory(path: string, what: string): Promise<boolean> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return false;
    throw new CliError(`${what} ${path}: ${(e as Error).message}`);
  }
  if (!info.isDirectory) throw new CliError(`${what} ${path} is a file, not a directory`);
  return true;
}

/**
 * The checkpoint directory of `dir`: `dir` itself when it holds trainer_state.json, else
 * `dir/checkpoint` (or the previous one a kill mid-swap left as `.checkpoint-old`); null when
 * `dir` holds no checkpoint at all (a run stopped before its first one). A checkpoint
 * directory without trainer_state.json is damaged: a CliError.
 */
export async function findCheckpoint(dir: string): Promise<string | null> {
  if (!(await isDirectory(dir, "--resume"))) {
    throw new CliError(`--resume ${dir}: no such directory`);
  }
  const candidates = [dir, `${dir}/${CHECKPOINT}`, `${dir}/.${CHECKPOINT}-old`];
  for (const c of candidates) {
    if (await exists(`${c}/${STATE_FILE}`)) return c;
  }
  for (const c of candidates.slice(1)) {
    if (await exists(c)) {
      throw new CliError(`${c} holds no ${STATE_FILE}; the checkpoint is damaged`);
    }
  }
  return null;
}

/** Reads trainer_state.json of a checkpoint directory. */
export async function readTrainerState(ckpt: string): Promise<TrainerState> {
  try {
    const s = JSON.parse(await Deno.readTextFile(`${ckpt}/${STATE_FILE}`)) as TrainerState;
    if (
      (s.version !== 1 && s.version !== 2) || typeof s.step !== "number" || !s.settings ||
      !s.sampler || !s.optimizer || (s.version === 2 && (!s.files || !s.checksum))
    ) {
      throw new Error("unrecognised contents");
    }
    return s;
  } catch (e) {
    throw new CliError(
      `${ckpt}/${STATE_FILE} is not a trainer checkpoint (${(e as Error).message})`,
    );
  }
}

async function readChecked(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CliError(`${path} is missing; the checkpoint is incomplete`);
    }
    throw new CliError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/** The step a safetensors file of a checkpoint records in its `__metadata__`. */
function savedStep(bytes: Uint8Array, path: string): string | undefined {
  try {
    return decodeSafetensors(bytes, path).metadata?.step;
  } catch (e) {
    throw new CliError(`${path} is not a valid safetensors file: ${(e as Error).message}`);
  }
}

function checkStep(bytes: Uint8Array, ckpt: string, name: string, step: number): void {
  const saved = savedStep(bytes, `${ckpt}/${name}`);
  if (saved !== String(step)) {
    throw new CliError(
      `${ckpt}/${STATE_FILE} says step ${step}, but ${name} was saved at ${
        saved === undefined ? "no recorded step" : `step ${saved}`
      }; the checkpoint is inconsistent (was a file edited or copied in?)`,
    );
  }
}

/**
 * Checks a checkpoint before anything is loaded or written: every file trainer_state.json
 * lists has that SHA-256, both safetensors files record its step, and its own checksum holds.
 * Any mismatch is one CliError naming the file. Returns a note for a version-1 checkpoint,
 * which carries no hashes (only the model's step is checked). `skip` names files not needed
 * (sample skips optimizer.safetensors).
 */
export async function verifyCheckpoint(
  ckpt: string,
  state: TrainerState,
  options: { skip?: string[] } = {},
): Promise<string | undefined> {
  if (state.version === 1) {
    const bytes = await readChecked(`${ckpt}/model.safetensors`);
    checkStep(bytes, ckpt, "model.safetensors", state.step);
    return `note: ${ckpt} predates checkpoint hashes; only the model's step was verified`;
  }
  const files = state.files!;
  const skip = new Set(options.skip ?? []);
  for (const name of CHECKPOINT_FILES) {
    if (!(name in files) && !skip.has(name)) {
      throw new CliError(`${ckpt}/${STATE_FILE} records no SHA-256 of ${name}`);
    }
  }
  for (const [name, want] of Object.entries(files)) {
    if (!/^[\w.-]+$/.test(name) || name === "." || name === ".." || name === STATE_FILE) {
      throw new CliError(
        `${ckpt}/${STATE_FILE} lists an invalid file name ${JSON.stringify(name)}`,
      );
    }
    if (skip.has(name)) continue;
    const bytes = await readChecked(`${ckpt}/${name}`);
    const got = await sha256Hex(bytes);
    if (got !== want) {
      throw new CliError(
        `${ckpt}/${name} was changed or corrupted after it was saved: its SHA-256 is ` +
          `${got.slice(0, 16)}…, ${STATE_FILE} recorded ${String(want).slice(0, 16)}…`,
      );
    }
    if (name.endsWith(".safetensors")) checkStep(bytes, ckpt, name, state.step);
  }
  if ((await stateChecksum(state)) !== state.checksum) {
    throw new CliError(
      `${ckpt}/${STATE_FILE} was edited after it was saved (its checksum does not match)`,
    );
  }
  return undefined;
}

/** The files of a run directory (besides `checkpoint/`). */
export const RUN_FILES = /^(run\.json|metrics\.jsonl|report\.html|sample\.txt)$/;
/** Leftovers of an interrupted run: a partial checkpoint, a temporary file of a text write. */
export const STALE =
  /^(\.checkpoint-tmp-[0-9a-f]{8}|(run\.json|metrics\.jsonl|report\.html|sample\.txt)\.tmp-[0-9a-f]{8})$/;

/**
 * Removes what an interrupted run left in `runDir`: partial checkpoints (`.checkpoint-tmp-*`),
 * temporary files of atomic writes (`run.json.tmp-*`, ...) and a `.checkpoint-old` that a
 * complete `checkpoint` superseded. Returns the names removed.
 */
export async function removeStale(runDir: string): Promise<string[]> {
  const removed: string[] = [];
  const finalDone = await exists(`${runDir}/${CHECKPOINT}/${STATE_FILE}`);
  for await (const e of Deno.readDir(runDir)) {
    if (STALE.test(e.name) || (finalDone && e.name === `.${CHECKPOINT}-old`)) {
      await Deno.remove(`${runDir}/${e.name}`, { recursive: true });
      removed.push(e.name);
    }
  }
  return removed.sort();
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
  let tensors: Map<string, Tensor>;
  try {
    tensors = await loadSafetensors(`${ckpt}/optimizer.safetensors`);
  } catch (e) {
    throw new CliError(
      `${ckpt}/optimizer.safetensors is not a usable optimizer state: ${(e as Error).message}`,
    );
  }
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
