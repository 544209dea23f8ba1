/**
 * Training data: the default corpus (`data/moongrad-src-v1.txt`, a fixed snapshot of this
 * repository's own TypeScript and Markdown files, pinned by its SHA-256), or any UTF-8 text
 * file; a deterministic train/validation split of the bytes; tokens from a tokenizer
 * (`--tokenizer bytes`, the default, keeps the bytes as tokens, vocabulary 256); and a
 * resumable, seeded batch sampler.
 */
import { ByteTokenizer, type TextTokenizer, Tokenizer } from "../tokenizer/mod.ts";
import { CliError } from "./errors.ts";
import { Rng } from "../mod.ts";

/** A seeded PRNG (mulberry32) whose whole state is one u32, so it can be checkpointed. */
export { Rng };

/** Text split into byte tokens for training and validation. */
export interface Corpus {
  /** Where the text came from ("repository (N files)" or the file path). */
  source: string;
  /** Total bytes. */
  bytes: number;
  /** FNV-1a hash of the bytes (hex), to recognise the same data on resume. */
  hash: string;
  /** Training tokens (bytes). */
  train: Uint8Array;
  /** Validation tokens (bytes). */
  val: Uint8Array;
}

/** Token ids: bytes, or the ids of a larger vocabulary. */
export type TokenIds = Uint8Array | Int32Array;

/** `--tokenizer`: "bytes", or a directory / file holding tokenizer.json or tiktoken.model. */
export async function loadTokenizer(spec: string): Promise<TextTokenizer> {
  if (spec === "bytes") return new ByteTokenizer();
  try {
    return await Tokenizer.load(spec);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CliError(`--tokenizer ${spec}: no such file or directory (or "bytes")`);
    }
    throw new CliError(`--tokenizer ${spec}: ${(e as Error).message}`);
  }
}

/**
 * Tokenises the train and validation bytes of a split (invalid UTF-8 where the split cut a
 * character encodes as byte tokens, so nothing is lost; special-token text stays text).
 * Throws a CliError when either side has fewer than seqLen + 1 tokens.
 */
export function tokenizeSplit(
  corpus: Corpus,
  tok: TextTokenizer,
  seqLen: number,
): { train: TokenIds; val: TokenIds } {
  const train = tok.encodeBytes(corpus.train, { allowedSpecial: "none" });
  const val = tok.encodeBytes(corpus.val, { allowedSpecial: "none" });
  if (train.length < seqLen + 1 || val.length < seqLen + 1) {
    throw new CliError(
      `${corpus.source} is too short for --seq-len ${seqLen} after tokenization: ` +
        `${train.length} train / ${val.length} validation tokens (${tok.description})`,
    );
  }
  return { train, val };
}

/** The repository root (the parent of cli/), as a file URL. */
export function repoRoot(): URL {
  return new URL("../", import.meta.url);
}

/**
 * The default training text: a named, versioned file in the repository that never changes
 * (`deno task corpus` makes a new version), pinned by its SHA-256.
 */
export const DEFAULT_CORPUS = {
  /** Name and version, as runs record it. */
  name: "moongrad-src-v1",
  /** Path relative to the repository root. */
  path: "data/moongrad-src-v1.txt",
  /** SHA-256 of the whole file (hex). */
  sha256: "8276134e02d6969ec21778e390ed9ef175401e50551bbf6ca61175206cb43c82",
} as const;

/** SHA-256 of bytes, as 64 hex digits. */
export async function sha256Hex(b: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", b as BufferSource));
  return Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Reads the default corpus next to this module and checks it against its pinned SHA-256
 * (a CliError names the file and both hashes when it differs, or when it is missing).
 */
export async function loadDefaultCorpus(
  root: URL = repoRoot(),
): Promise<{ bytes: Uint8Array; sha256: string }> {
  const where = `${DEFAULT_CORPUS.path} (the default corpus)`;
  if (root.protocol !== "file:") {
    throw new CliError(
      `the default corpus is read from a local checkout, but this script runs from ${root.href}; ` +
        "pass --data FILE",
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(new URL(DEFAULT_CORPUS.path, root));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new CliError(`${where} is missing from this checkout; restore it or pass --data FILE`);
    }
    throw new CliError(`${where}: cannot read it (${(e as Error).message})`);
  }
  const sha256 = await sha256Hex(bytes);
  if (sha256 !== DEFAULT_CORPUS.sha256) {
    throw new CliError(
      `${where} was modified: its SHA-256 is ${sha256}, ${DEFAULT_CORPUS.name} is ` +
        `${DEFAULT_CORPUS.sha256}; restore it (git checkout ${DEFAULT_CORPUS.path}) or pass ` +
        "--data FILE",
    );
  }
  return { bytes, sha256 };
}

/** FNV-1a 32-bit over bytes, twice with different offsets, as 16 hex digits. */
export function hashBytes(b: Uint8Array): string {
  let h1 = 0x811c9dc5, h2 = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < b.length; i++) {
    h1 = Math.imul(h1 ^ b[i], 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ b[i], 0x01000193 + 2) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}

/** Byte offset of the first invalid UTF-8 sequence, or -1 when the bytes are valid UTF-8. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let n: number, min: number;
    if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    if (i + n >= b.length) return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads and checks a user's text file (exists, a file, non-empty, valid UTF-8). */
export async function loadTextFile(path: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    const st = await Deno.stat(path);
    if (!st.isFile) throw new CliError(`--data ${path} is not a file`);
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof CliError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new CliError(`--data ${path}: no such file`);
    throw new CliError(`--data ${path}: cannot read it (${(e as Error).message})`);
  }
  if (bytes.length === 0) throw new CliError(`--data ${path} is empty`);
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) {
    throw new CliError(
      `--data ${path} is not UTF-8 text: invalid byte 0x${
        bytes[bad].toString(16).padStart(2, "0")
      } at offset ${bad}`,
    );
  }
  return bytes;
}

/**
 * Splits bytes into train and validation deterministically: chunks of C bytes
 * (C = clamp(n/20, seqLen+1, 4096)), every 10th chunk to validation; short texts (fewer than
 * 20 chunks) keep their last tenth (at least seqLen + 1 bytes) for validation. Throws a
 * CliError when either side is shorter than seqLen + 1.
 */
export function splitCorpus(
  bytes: Uint8Array,
  seqLen: number,
  source: string,
): Corpus {
  const need = seqLen + 1;
  const chunk = Math.max(need, Math.min(4096, Math.floor(bytes.length / 20)));
  const chunks = Math.ceil(bytes.length / chunk);
  const train: Uint8Array[] = [];
  const val: Uint8Array[] = [];
  if (chunks >= 20) {
    for (let i = 0; i < chunks; i++) {
      const part = bytes.subarray(i * chunk, Math.min(bytes.length, (i + 1) * chunk));
      (i % 10 === 9 ? val : train).push(part);
    }
  } else {
    const cut = bytes.length - Math.max(need, Math.floor(bytes.length / 10));
    train.push(bytes.subarray(0, Math.max(0, cut)));
    val.push(bytes.subarray(Math.max(0, cut)));
  }
  const corpus: Corpus = {
    source,
    bytes: bytes.length,
    hash: hashBytes(bytes),
    train: concatBytes(train),
    val: concatBytes(val),
  };
  if (corpus.train.length < need || corpus.val.length < need) {
    throw new CliError(
      `${source} is too short: ${bytes.length} bytes, but --seq-len ${seqLen} needs at least ${
        2 * need
      } (${need} for training and ${need} for validation)`,
    );
  }
  return corpus;
}

/** The resumable position of the sampler. */
export interface SamplerState {
  /** Completed passes over the training windows. */
  epoch: number;
  /** Windows of the current epoch already served. */
  cursor: number;
  /** The RNG state at the start of the current epoch (regenerates its order). */
  epochRng: number;
  /** The RNG state now. */
  rng: number;
}

/** One batch: inputs and next-token targets, row-major [batch, seqLen]. */
export interface Batch {
  /** Input token ids. */
  ids: Int32Array;
  /** Target token ids (the inputs shifted by one). */
  targets: Int32Array;
}

/**
 * Serves training batches: each epoch draws a random shift in [0, seqLen) and a random order
 * of the windows of seqLen + 1 tokens starting at shift + i·seqLen; batches take the next
 * `batch` windows of that order. The state (`state`) resumes the exact sequence.
 */
export class BatchSampler {
  readonly #data: TokenIds;
  readonly #batch: number;
  readonly #seqLen: number;
  readonly #rng: Rng;
  #epoch = 0;
  #cursor = 0;
  #epochRng = 0;
  #shift = 0;
  #order: Uint32Array = new Uint32Array(0);

  /** Creates a sampler over `data` seeded with `seed`. */
  constructor(data: TokenIds, batch: number, seqLen: number, seed: number) {
    this.#data = data;
    this.#batch = batch;
    this.#seqLen = seqLen;
    this.#rng = new Rng(seed ^ 0x9e3779b9);
    this.#startEpoch();
  }

  #startEpoch(): void {
    this.#epochRng = this.#rng.state;
    const T = this.#seqLen;
    const maxShift = Math.min(T, this.#data.length - (T + 1) + 1);
    this.#shift = this.#rng.int(maxShift);
    const n = Math.floor((this.#data.length - this.#shift - (T + 1)) / T) + 1;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.#rng.int(i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    this.#order = order;
    this.#cursor = 0;
  }

  /** The next batch. */
  next(): Batch {
    const B = this.#batch, T = this.#seqLen;
    const ids = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      if (this.#cursor >= this.#order.length) {
        this.#epoch++;
        this.#startEpoch();
      }
      const start = this.#shift + this.#order[this.#cursor++] * T;
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = this.#data[start + t];
        targets[b * T + t] = this.#data[start + t + 1];
      }
    }
    return { ids, targets };
  }

  /** The position to checkpoint. */
  get state(): SamplerState {
    return {
      epoch: this.#epoch,
      cursor: this.#cursor,
      epochRng: this.#epochRng,
      rng: this.#rng.state,
    };
  }

  /** Restores a checkpointed position. */
  set state(s: SamplerState) {
    this.#rng.state = s.epochRng >>> 0;
    this.#startEpoch();
    this.#epoch = s.epoch;
    this.#cursor = s.cursor;
    this.#rng.state = s.rng >>> 0;
  }
}

/**
 * The fixed validation batches: up to `maxBatches` batches of windows evenly spaced over the
 * validation tokens (the same every evaluation, so the curve is comparable).
 */
export function validationBatches(
  val: TokenIds,
  batch: number,
  seqLen: number,
  maxBatches: number,
): Batch[] {
  const T = seqLen;
  const windows = Math.floor((val.length - (T + 1)) / T) + 1;
  const nb = Math.max(1, Math.min(maxBatches, Math.floor(windows / batch)));
  const total = Math.min(windows, nb * batch);
  const rows = Math.min(batch, total);
  const out: Batch[] = [];
  for (let k = 0; k < nb; k++) {
    const ids = new Int32Array(rows * T);
    const targets = new Int32Array(rows * T);
    for (let b = 0; b < rows; b++) {
      const w = Math.floor(((k * rows + b) * windows) / (nb * rows));
      const start = w * T;
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = val[start + t];
        targets[b * T + t] = val[start + t + 1];
      }
    }
    out.push({ ids, targets });
  }
  return out;
}
