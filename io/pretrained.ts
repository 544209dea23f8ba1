/**
 * Model directories laid out like Hugging Face's `save_pretrained` / `from_pretrained`:
 * `config.json` plus either one `model.safetensors` or, above `maxShardSize`, shards
 * `model-0000k-of-0000n.safetensors` with a `model.safetensors.index.json`
 * (`{"metadata": {"total_size": bytes}, "weight_map": {name: shard}}`). Loading reads both
 * forms and F32, BF16 and F16 tensors (widened to f32, the model's dtype); it skips the
 * multi-token-prediction layers a config declares (`model.layers.{L + i}.*`, as transformers
 * does) and refuses quantized checkpoints by name.
 */
import { MoongradError } from "../core/errors.ts";
import { noGrad } from "../core/autograd.ts";
import type { Tensor } from "../core/tensor.ts";
import type { KimiConfig } from "../nn/config.ts";
import { loadConfig, toHfConfig } from "../nn/hf_config.ts";
import {
  copyParam,
  type LoadResult,
  type Module,
  stateDictProblems,
  type TensorSpec,
} from "../nn/module.ts";
import {
  decodeSafetensors,
  entryToTensor,
  type SafetensorsEntry,
  serializeSafetensors,
} from "./safetensors.ts";

/**
 * HF's default `max_shard_size` ("5GB" = 5·10⁹ bytes).
 *
 * @example HF's 5 GB shard limit
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.io.DEFAULT_MAX_SHARD_SIZE); // 5000000000
 * ```
 */
export const DEFAULT_MAX_SHARD_SIZE = 5_000_000_000;
/**
 * The single-file weights name.
 *
 * @example The single-file weights of a directory
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const path = `tiny/${mg.io.WEIGHTS_NAME}`; // "tiny/model.safetensors"
 * ```
 */
export const WEIGHTS_NAME = "model.safetensors";
/**
 * The shard index name.
 *
 * @example Is a directory sharded?
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const sharded = await Deno.stat(`big/${mg.io.WEIGHTS_INDEX_NAME}`).then(() => true, () => false);
 * ```
 */
export const WEIGHTS_INDEX_NAME = "model.safetensors.index.json";

/**
 * Options of `savePretrained`.
 *
 * @example Shard above 1 MB
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const opts: mg.io.SavePretrainedOptions = { maxShardSize: 1_000_000 };
 * ```
 */
export interface SavePretrainedOptions {
  /**
   * Largest shard in bytes of tensor data (default 5·10⁹, HF's "5GB"); a model above it is
   * split into `model-0000k-of-0000n.safetensors` files plus an index. A tensor larger than
   * the limit gets a shard of its own, as in transformers.
   */
  maxShardSize?: number;
  /** String metadata for each safetensors header (`format: "pt"` is always there). */
  metadata?: Record<string, string>;
}

const isShardName = (f: string) =>
  f === WEIGHTS_NAME || f === WEIGHTS_INDEX_NAME ||
  /^model-\d{5}-of-\d{5}\.safetensors$/.test(f);

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeAtomic(op: string, path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new MoongradError(op, `could not write ${path}: ${(e as Error).message}`);
  }
}

const BYTES: Record<string, number> = { f32: 4, f16: 2, i32: 4, bool: 1 };

/**
 * Groups `names` (in order) into shards of at most `max` bytes the way transformers'
 * `split_torch_state_dict_into_shards` does: a new shard starts when the next tensor would
 * overflow the current one; a tensor above `max` sits alone.
 *
 * @example Greedy shard plan in name order
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const plan = mg.io.planShards([["a", 60], ["b", 60], ["c", 30]], 100);
 * console.log(plan); // [["a"], ["b", "c"]]
 * ```
 */
export function planShards(sizes: readonly [string, number][], max: number): string[][] {
  const shards: string[][] = [];
  let cur: string[] = [];
  let used = 0;
  for (const [name, bytes] of sizes) {
    if (cur.length > 0 && used + bytes > max) {
      shards.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(name);
    used += bytes;
  }
  if (cur.length) shards.push(cur);
  return shards;
}

/**
 * Writes `module`'s state dict and `config` into directory `dir` (created if needed) as a
 * transformers-loadable checkpoint: config.json (`toHfConfig`) and model.safetensors, or
 * shards + model.safetensors.index.json above `maxShardSize`. Every file is written atomically;
 * weight files of an earlier save in `dir` that this save does not rewrite are removed.
 * @example
 * ```ts
 * await savePretrained("ckpt", model, model.config, { maxShardSize: 2e9 });
 * ```
 */
export async function savePretrained(
  dir: string,
  module: Module,
  config: KimiConfig,
  options: SavePretrainedOptions = {},
): Promise<{ files: string[]; totalSize: number }> {
  const op = "savePretrained";
  const max = options.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE;
  if (!(max > 0)) throw new MoongradError(op, `maxShardSize must be > 0 bytes, got ${max}`);
  const sd = module.stateDict();
  const sizes: [string, number][] = [...sd].map(([n, t]) => [n, t.size * BYTES[t.dtype]]);
  const totalSize = sizes.reduce((a, [, b]) => a + b, 0);
  const shards = planShards(sizes, max);
  const n = shards.length;
  const pad = (i: number) => String(i).padStart(5, "0");
  const files = n === 1
    ? [WEIGHTS_NAME]
    : shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new MoongradError(op, `could not create ${dir}: ${(e as Error).message}`);
  }
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const part = new Map<string, Tensor>(shards[i].map((name) => [name, sd.get(name)!]));
    const bytes = await serializeSafetensors(part, { metadata: options.metadata });
    await writeAtomic(op, `${dir}/${files[i]}`, bytes);
    for (const name of shards[i]) weightMap[name] = files[i];
  }
  if (n > 1) {
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    const text = JSON.stringify(index, null, 2) + "\n";
    await writeAtomic(op, `${dir}/${WEIGHTS_INDEX_NAME}`, new TextEncoder().encode(text));
  }
  const cfg = JSON.stringify(toHfConfig(config), null, 2) + "\n";
  await writeAtomic(op, `${dir}/config.json`, new TextEncoder().encode(cfg));
  const keep = new Set([...files, ...(n > 1 ? [WEIGHTS_INDEX_NAME] : [])]);
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && isShardName(e.name) && !keep.has(e.name)) await Deno.remove(`${dir}/${e.name}`);
  }
  return { files: [...keep], totalSize };
}

/** The weight files of a pretrained directory and the tensor names each should hold. */
async function weightFiles(op: string, dir: string): Promise<Map<string, Set<string> | null>> {
  const indexPath = `${dir}/${WEIGHTS_INDEX_NAME}`;
  if (await exists(indexPath)) {
    let index: { weight_map?: unknown };
    try {
      index = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      throw new MoongradError(op, `${indexPath} is not valid JSON: ${(e as Error).message}`);
    }
    const wm = index.weight_map;
    if (wm === null || typeof wm !== "object" || Array.isArray(wm)) {
      throw new MoongradError(op, `${indexPath} has no "weight_map" object`);
    }
    const files = new Map<string, Set<string>>();
    for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
        throw new MoongradError(
          op,
          `${indexPath}: weight_map["${name}"] must be a file name in ${dir}`,
        );
      }
      if (!files.has(file)) files.set(file, new Set());
      files.get(file)!.add(name);
    }
    return files;
  }
  if (await exists(`${dir}/${WEIGHTS_NAME}`)) return new Map([[WEIGHTS_NAME, null]]);
  throw new MoongradError(
    op,
    `${dir} holds neither ${WEIGHTS_NAME} nor ${WEIGHTS_INDEX_NAME} (no weights to load)`,
  );
}

/**
 * Options of `loadPretrainedWeights`.
 *
 * @example Skip the multi-token-prediction layers of a checkpoint
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const opts: mg.io.LoadPretrainedOptions = { strict: true, mtpLayers: 1 };
 * ```
 */
export interface LoadPretrainedOptions {
  /** Missing / unexpected names are errors when true (default); else skipped and returned. */
  strict?: boolean;
  /** Decoder layers of the model: tensors of `model.layers.{L + i}` for i < mtp are skipped. */
  numHiddenLayers?: number;
  /** Multi-token-prediction layers after them (config `num_nextn_predict_layers`). */
  mtpLayers?: number;
}

/**
 * Loads the weights of a pretrained directory (one model.safetensors, or the shards of
 * model.safetensors.index.json) into `module` in place. All files' headers are read and every
 * name, shape and dtype is checked before anything is uploaded (one error lists every
 * problem); BF16 and F16 tensors are widened to f32 exactly; MTP tensors are skipped.
 *
 * @example Load a saved directory into a model
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = await mg.io.readPretrainedConfig("tiny");
 * const lm = new mg.nn.KimiLM(config);
 * await mg.io.loadPretrainedWeights(lm, "tiny"); // model.safetensors or the shards of the index
 * ```
 */
export async function loadPretrainedWeights(
  module: Module,
  dir: string,
  options: LoadPretrainedOptions = {},
): Promise<LoadResult> {
  const op = "fromPretrained";
  const files = await weightFiles(op, dir);
  const L = options.numHiddenLayers ?? Infinity;
  const mtp = options.mtpLayers ?? 0;
  const isMtp = (name: string) => {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    return m !== null && Number(m[1]) >= L && Number(m[1]) < L + mtp;
  };
  const decoded = new Map<string, Map<string, SafetensorsEntry>>();
  const specs = new Map<string, TensorSpec>();
  const where = new Map<string, string>();
  const problems: string[] = [];
  for (const [file, names] of files) {
    const path = `${dir}/${file}`;
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new MoongradError(op, `could not read ${path}: ${(e as Error).message}`);
    }
    const { entries } = decodeSafetensors(bytes, path);
    decoded.set(file, entries);
    for (const name of names ?? []) {
      if (!entries.has(name)) problems.push(`${file} lacks "${name}" (listed in the index)`);
    }
    for (const [name, e] of entries) {
      if (names && !names.has(name)) continue; // HF loads what the index lists
      if (isMtp(name)) continue;
      if (where.has(name)) {
        problems.push(`"${name}" is in both ${where.get(name)} and ${file}`);
        continue;
      }
      where.set(name, file);
      // BF16 / F16 load as the model's f32.
      const f32 = e.fileDtype === "BF16" || e.fileDtype === "F16" || e.fileDtype === "F32";
      specs.set(name, { shape: e.shape, dtype: f32 ? "f32" : e.dtype });
    }
  }
  const own = module.stateDict();
  const r = stateDictProblems(own, specs, { strict: options.strict ?? true });
  problems.push(...r.problems);
  if (problems.length) {
    throw new MoongradError(
      op,
      `${dir} does not match ${module.constructor.name}: ${problems.length} problem(s):\n  ${
        problems.slice(0, 40).join("\n  ")
      }${problems.length > 40 ? `\n  … and ${problems.length - 40} more` : ""}`,
    );
  }
  noGrad(() => {
    for (const [name, dst] of own) {
      const file = where.get(name);
      if (!file) continue;
      const e = decoded.get(file)!.get(name)!;
      const t = entryToTensor(e.fileDtype === "F16" ? { ...e, dtype: "f32" } : e);
      copyParam(t, dst);
      t.dispose();
    }
  });
  return { missing: r.missing, unexpected: r.unexpected };
}

/**
 * Reads a pretrained directory's config.json with `loadConfig` (transformers' semantics) and
 * refuses configs whose checkpoint moongrad cannot load (a `quantization_config`).
 *
 * @example Read config.json as transformers would
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const config = await mg.io.readPretrainedConfig("tiny");
 * console.log(config.hidden_size, config.num_hidden_layers); // 128 4
 * // a directory without config.json throws a MoongradError
 * ```
 */
export async function readPretrainedConfig(dir: string): Promise<KimiConfig> {
  const path = `${dir.replace(/\/+$/, "")}/config.json`;
  if (!(await exists(path))) {
    throw new MoongradError("fromPretrained", `${dir} has no config.json`);
  }
  const config = await loadConfig(path);
  const q = config.hf_metadata.quantization_config as { quant_method?: unknown } | undefined;
  if (q !== undefined) {
    throw new MoongradError(
      "fromPretrained",
      `${path} has quantization_config (quant_method ${
        JSON.stringify(q.quant_method)
      }): quantized checkpoints are not loaded; dequantize the weights to bf16/f32 first`,
    );
  }
  return config;
}
