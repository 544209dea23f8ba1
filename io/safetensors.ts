/**
 * Safetensors: the Hugging Face tensor file format, read and written byte for byte.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 * (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {string: string}}`, space-padded so the data starts 8-byte aligned), then
 * the raw little-endian tensor bytes, offsets relative to the start of the data. Tensors are
 * written largest element first (then by name), so every tensor stays aligned, as the
 * reference writer does.
 *
 * `serializeSafetensors` / `parseSafetensors` work on bytes (browsers); `saveSafetensors`,
 * `loadSafetensors` and `loadInto` use Deno's file API. Writes are atomic: a temporary file
 * in the same directory is renamed over the target, so a failed save leaves no partial file.
 */
import { deviceInfo } from "../core/device.ts";
import { byteSize, type DType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { noGrad } from "../core/autograd.ts";
import { readback, upload } from "../core/runtime.ts";
import { numel } from "../core/shape.ts";
import { Tensor } from "../core/tensor.ts";
import { contiguous } from "../ops/elementwise.ts";
import {
  copyParam,
  type LoadOptions,
  type LoadResult,
  Module,
  type StateDictLike,
  stateDictProblems,
  type TensorSpec,
} from "../nn/module.ts";

/**
 * Safetensors dtypes moongrad reads. BF16 is widened to f32 on load (exactly).
 *
 * @example The dtype of each tensor in a file
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const { tensors } = await mg.io.readSafetensorsHeader("model.safetensors");
 * const dtypes: mg.io.SafetensorsDType[] = [...tensors.values()].map((e) => e.fileDtype); // "BF16", ...
 * ```
 */
export type SafetensorsDType = "F32" | "F16" | "BF16" | "I32" | "BOOL";

const FILE_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, BOOL: 1 };
const TO_FILE: Record<DType, SafetensorsDType> = {
  f32: "F32",
  f16: "F16",
  i32: "I32",
  bool: "BOOL",
};
/** Header lengths above this are rejected as corrupt (the reference reader's limit). */
const MAX_HEADER = 100_000_000;

/**
 * One tensor of a decoded file, still on the CPU.
 *
 * @example Inspect one entry without uploading it
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const { tensors } = await mg.io.readSafetensorsHeader("model.safetensors");
 * const e: mg.io.SafetensorsEntry = tensors.get("model.embed_tokens.weight")!;
 * console.log(e.fileDtype, e.dtype, e.shape); // BF16 f32 [256, 128]
 * ```
 */
export interface SafetensorsEntry {
  /** dtype in the file. */
  readonly fileDtype: SafetensorsDType;
  /** The moongrad dtype it loads as. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: number[];
  /** Its raw little-endian bytes (a view into the file). */
  readonly bytes: Uint8Array;
}

/**
 * A decoded safetensors file: its metadata and its tensors, not yet on the GPU.
 *
 * @example Read the metadata of a file in memory
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const bytes = await Deno.readFile("model.safetensors");
 * const decoded: mg.io.DecodedSafetensors = mg.io.decodeSafetensors(bytes, "model.safetensors");
 * console.log(decoded.metadata); // { format: "pt" }
 * ```
 */
export interface DecodedSafetensors {
  /** The `__metadata__` string map, or null. */
  metadata: Record<string, string> | null;
  /** Tensors by name, in header order. */
  entries: Map<string, SafetensorsEntry>;
}

/**
 * Options of `saveSafetensors` / `serializeSafetensors`.
 *
 * @example Write metadata and a config beside the weights
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.io.SaveOptions = { metadata: { format: "pt", note: "step 1000" } };
 * await mg.io.saveSafetensors("linear.safetensors", new mg.nn.Linear(8, 4, { seed: 0 }), opts);
 * ```
 */
export interface SaveOptions {
  /** String metadata stored in `__metadata__` (`format: "pt"` is added unless given). */
  metadata?: Record<string, string>;
  /** A config object written as `config.json` beside the weights (saveSafetensors only). */
  config?: unknown;
}

/**
 * What can be saved: a Module (its state dict) or a name → tensor map or record.
 *
 * @example A module or a state dict
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const a: mg.io.Saveable = lin;
 * const b: mg.io.Saveable = lin.stateDict(); // Map<string, Tensor>
 * const bytes = await mg.io.serializeSafetensors(b);
 * ```
 */
export type Saveable = Module | StateDictLike;

function loadDtype(file: SafetensorsDType, f16: boolean): DType {
  switch (file) {
    case "F32":
    case "BF16":
      return "f32";
    case "F16":
      return f16 ? "f16" : "f32";
    case "I32":
      return "i32";
    case "BOOL":
      return "bool";
  }
}

function adapterHasF16(): boolean {
  try {
    return deviceInfo().f16;
  } catch {
    return true; // decoding without a device: report the file's dtype
  }
}

/**
 * Validates and decodes a safetensors byte image on the CPU (no GPU needed). Every structural
 * problem (truncation, bad JSON, offsets outside the data, overlapping tensors, a size that
 * does not match dtype × shape, an unknown dtype) throws a MoongradError naming `source`.
 * F16 loads as f16 when the adapter has shader-f16, else as f32; BF16 loads as f32.
 *
 * @example Parse the header only (no GPU upload)
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const bytes = await mg.io.serializeSafetensors(new Map([["w", mg.zeros([2, 3])]]));
 * const { tensors } = mg.io.decodeSafetensors(bytes);
 * console.log(tensors.get("w")!.shape); // [2, 3]
 * // a truncated or malformed buffer throws a MoongradError naming the source
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array, source = "<bytes>"): DecodedSafetensors {
  return decode(bytes, source, "parseSafetensors");
}

function decode(bytes: Uint8Array, source: string, op: string): DecodedSafetensors {
  const fail = (msg: string) => new MoongradError(op, `${source}: ${msg}`);
  if (!(bytes instanceof Uint8Array)) throw fail("expected a Uint8Array of the file's bytes");
  if (bytes.byteLength < 8) {
    throw fail(
      `file is ${bytes.byteLength} bytes, shorter than the 8-byte header length ` +
        "(truncated, or not a safetensors file)",
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER)) {
    throw fail(`header length ${n64} exceeds ${MAX_HEADER} bytes (corrupt file?)`);
  }
  const n = Number(n64);
  if (8 + n > bytes.byteLength) {
    throw fail(
      `header length ${n} exceeds the ${bytes.byteLength - 8} bytes after the length prefix ` +
        "(truncated file?)",
    );
  }
  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
    header = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw fail("header must be a JSON object of tensor entries");
  }
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const f16 = adapterHasF16();
  let metadata: Record<string, string> | null = null;
  const entries = new Map<string, SafetensorsEntry>();
  const spans: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
        throw fail("__metadata__ must be an object of strings");
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") throw fail(`__metadata__.${k} must be a string`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== "object") throw fail(`entry "${name}" must be an object`);
    if (typeof e.dtype !== "string" || !(e.dtype in FILE_BYTES)) {
      throw fail(
        `tensor "${name}" has dtype ${JSON.stringify(e.dtype)}, which moongrad does not read ` +
          "(supported: F32, F16, BF16 (loaded as f32), I32, BOOL)",
      );
    }
    const fileDtype = e.dtype as SafetensorsDType;
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw fail(
        `tensor "${name}" has shape ${JSON.stringify(shape)}; expected non-negative integers`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 ||
      !off.every((v) => Number.isSafeInteger(v) && v >= 0)
    ) {
      throw fail(`tensor "${name}" has data_offsets ${JSON.stringify(off)}; expected [begin, end]`);
    }
    const [begin, end] = off as number[];
    if (begin > end || end > dataLen) {
      throw fail(
        `tensor "${name}" has data_offsets [${begin}, ${end}] outside the ${dataLen} data bytes ` +
          "(truncated or corrupt file)",
      );
    }
    const need = numel(shape) * FILE_BYTES[fileDtype];
    if (end - begin !== need) {
      throw fail(
        `tensor "${name}" spans ${end - begin} bytes but ${fileDtype} ${
          fmtShape(shape)
        } needs ${need}`,
      );
    }
    spans.push([begin, end, name]);
    entries.set(name, {
      fileDtype,
      dtype: loadDtype(fileDtype, f16),
      shape: [...shape],
      bytes: bytes.subarray(dataStart + begin, dataStart + end),
    });
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) {
      throw fail(`tensors "${spans[i - 1][2]}" and "${spans[i][2]}" overlap in the data`);
    }
  }
  return { metadata, entries };
}

/**
 * Uploads one decoded entry as a new tensor (converting BF16, and F16 without shader-f16).
 *
 * @example Upload one chosen entry
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const { tensors } = mg.io.decodeSafetensors(await Deno.readFile("model.safetensors"));
 * const w = mg.io.entryToTensor(tensors.get("lm_head.weight")!); // a new Tensor on the GPU
 * ```
 */
export function entryToTensor(e: SafetensorsEntry): Tensor {
  const t = Tensor.empty(e.shape, e.dtype);
  const count = numel(e.shape);
  if (count === 0) return t;
  let raw: Uint8Array<ArrayBuffer>;
  if (e.fileDtype === "BF16") {
    const src = new Uint16Array(e.bytes.slice().buffer);
    raw = new Uint8Array(Uint32Array.from(src, (h) => h << 16).buffer);
  } else if (e.fileDtype === "F16" && e.dtype === "f32") {
    raw = new Uint8Array(Float32Array.from(new Float16Array(e.bytes.slice().buffer)).buffer);
  } else if (e.fileDtype === "BOOL") {
    raw = new Uint8Array(Uint32Array.from(e.bytes, (b) => (b ? 1 : 0)).buffer);
  } else {
    raw = e.bytes.slice();
  }
  upload(t.storage("parseSafetensors").buf, 0, raw);
  return t;
}

/**
 * Parses a safetensors byte image into new GPU tensors by name (the caller disposes them).
 *
 * @example Round-trip a state dict through bytes
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lin = new mg.nn.Linear(8, 4, { seed: 0 });
 * const bytes = await mg.io.serializeSafetensors(lin);
 * const sd = mg.io.parseSafetensors(bytes); // Map<string, Tensor>, uploaded
 * console.log([...sd.keys()]); // ["weight"]
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, source = "<bytes>"): Map<string, Tensor> {
  return uploadAll(bytes, source, "parseSafetensors");
}

function uploadAll(bytes: Uint8Array, source: string, op: string): Map<string, Tensor> {
  const { entries } = decode(bytes, source, op);
  const out = new Map<string, Tensor>();
  for (const [name, e] of entries) out.set(name, entryToTensor(e));
  return out;
}

function toEntries(what: Saveable, op: string): [string, Tensor][] {
  if (what instanceof Module) return [...what.stateDict()];
  if (what instanceof Map) return [...what];
  if (what && typeof what === "object") return Object.entries(what as Record<string, Tensor>);
  throw new MoongradError(op, "expected a Module, a Map or a record of tensors");
}

/** Reads a tensor's elements back as the bytes the file stores (bit-exact). */
async function fileBytes(t: Tensor, op: string): Promise<Uint8Array> {
  const n = t.size;
  if (n === 0) return new Uint8Array(0);
  if (t.dtype === "bool") return new Uint8Array(await t.data());
  const src = t.isContiguous ? t : noGrad(() => contiguous(t));
  try {
    const bs = byteSize(t.dtype);
    return new Uint8Array(await readback(op, src.storage(op).buf, src.offset * bs, n * bs));
  } finally {
    if (src !== t) src.dispose();
  }
}

/**
 * Serializes tensors (a Module's state dict, or a map/record) to a safetensors byte image.
 * Reads every tensor back from the GPU (all readbacks in flight at once).
 *
 * @example Bytes of a module's weights
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const bytes = await mg.io.serializeSafetensors(new mg.nn.Linear(8, 4, { seed: 0 }));
 * console.log(bytes.length); // 8-byte header length + JSON header + 128 bytes of f32 data
 * ```
 */
export async function serializeSafetensors(
  what: Saveable,
  options: SaveOptions = {},
): Promise<Uint8Array> {
  const op = "serializeSafetensors";
  const items = toEntries(what, op);
  const seen = new Set<string>();
  for (const [name, t] of items) {
    if (name === "__metadata__" || name === "" || seen.has(name)) {
      throw new MoongradError(op, `invalid or repeated tensor name ${JSON.stringify(name)}`);
    }
    seen.add(name);
    if (!(t instanceof Tensor)) throw new MoongradError(op, `"${name}" is not a Tensor`);
    if (t.isDisposed) throw new MoongradError(op, `tensor "${name}" was disposed`);
  }
  const metadata = { format: "pt", ...(options.metadata ?? {}) };
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") {
      throw new MoongradError(op, `metadata "${k}" must be a string, got ${typeof v}`);
    }
  }
  const order = [...items].sort(([na, a], [nb, b]) =>
    FILE_BYTES[TO_FILE[b.dtype]] - FILE_BYTES[TO_FILE[a.dtype]] || (na < nb ? -1 : na > nb ? 1 : 0)
  );
  const datas = await Promise.all(order.map(([, t]) => fileBytes(t, op)));
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  order.forEach(([name, t], i) => {
    header[name] = {
      dtype: TO_FILE[t.dtype],
      shape: [...t.shape],
      data_offsets: [offset, offset + datas[i].byteLength],
    };
    offset += datas[i].byteLength;
  });
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const d of datas) {
    out.set(d, at);
    at += d.byteLength;
  }
  return out;
}

function requireDeno(op: string): void {
  if (typeof Deno === "undefined" || typeof Deno.readFile !== "function") {
    throw new MoongradError(
      op,
      "needs Deno's file API (Deno.readFile / Deno.writeFile); in a browser use " +
        "serializeSafetensors / parseSafetensors on bytes instead",
    );
  }
}

/** Writes bytes to `path` atomically: a temporary file beside it, then a rename. */
async function writeAtomic(op: string, path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new MoongradError(op, `could not write ${path}: ${(e as Error).message}`);
  }
}

/** The directory part of a path ("" for a bare file name), keeping the separator. */
function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "" : path.slice(0, i + 1);
}

/**
 * Saves a Module (HF tensor names from its state dict) or a name → tensor map to `path` in
 * safetensors format, atomically. With `options.config`, also writes it as `config.json`
 * in the same directory (atomically, after the weights).
 *
 * @example Save a model with its config
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const config = mg.nn.makeConfig("tiny");
 * const lm = new mg.nn.KimiLM(config, { seed: 0 });
 * await mg.io.saveSafetensors("tiny/model.safetensors", lm, { config }); // also tiny/config.json
 * ```
 */
export async function saveSafetensors(
  path: string,
  what: Saveable,
  options: SaveOptions = {},
): Promise<void> {
  const op = "saveSafetensors";
  requireDeno(op);
  const bytes = await serializeSafetensors(what, options);
  await writeAtomic(op, path, bytes);
  if (options.config !== undefined) {
    const text = JSON.stringify(options.config, null, 2);
    if (text === undefined) throw new MoongradError(op, "config is not JSON-serializable");
    await writeAtomic(op, `${dirOf(path)}config.json`, new TextEncoder().encode(text + "\n"));
  }
}

async function readFile(op: string, path: string): Promise<Uint8Array> {
  requireDeno(op);
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new MoongradError(op, `could not read ${path}: ${(e as Error).message}`);
  }
}

/**
 * Loads every tensor of a safetensors file as new GPU tensors by name (the caller disposes).
 *
 * @example Load every tensor of a file
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const sd = await mg.io.loadSafetensors("tiny/model.safetensors");
 * console.log(sd.get("lm_head.weight")!.shape); // [256, 128]
 * ```
 */
export async function loadSafetensors(path: string): Promise<Map<string, Tensor>> {
  return uploadAll(await readFile("loadSafetensors", path), path, "loadSafetensors");
}

/**
 * Reads the `__metadata__` and tensor shapes/dtypes of a file without uploading anything.
 *
 * @example List a file's tensors
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const { metadata, tensors } = await mg.io.readSafetensorsHeader("tiny/model.safetensors");
 * for (const [name, e] of tensors) console.log(name, e.fileDtype, e.shape);
 * ```
 */
export async function readSafetensorsHeader(path: string): Promise<DecodedSafetensors> {
  const op = "readSafetensorsHeader";
  return decode(await readFile(op, path), path, op);
}

/**
 * Loads a safetensors file into `module`'s parameters and buffers in place. Names, shapes and
 * dtypes are all checked before anything is uploaded; one MoongradError naming the file lists
 * every mismatch. Missing/unexpected names are errors unless `strict: false`.
 *
 * @example Load weights into an existing module
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const lm = new mg.nn.KimiLM(mg.nn.makeConfig("tiny"));
 * await mg.io.loadInto(lm, "tiny/model.safetensors"); // throws on missing or unexpected names
 * ```
 */
export async function loadInto(
  module: Module,
  path: string,
  options: LoadOptions = {},
): Promise<LoadResult> {
  const op = "loadInto";
  const { entries } = decode(await readFile(op, path), path, op);
  const own = module.stateDict();
  const specs = new Map<string, TensorSpec>(entries);
  const { problems, missing, unexpected } = stateDictProblems(own, specs, options);
  if (problems.length) {
    throw new MoongradError(
      op,
      `${path} does not match ${module.constructor.name}: ${problems.length} problem(s):\n  ${
        problems.join("\n  ")
      }`,
    );
  }
  noGrad(() => {
    for (const [name, dst] of own) {
      const e = entries.get(name);
      if (!e) continue;
      const t = entryToTensor(e);
      copyParam(t, dst);
      t.dispose();
    }
  });
  return { missing, unexpected };
}
