/**
 * `Tokenizer`: byte-level BPE with Hugging Face `tokenizers` semantics, built from a
 * `tokenizer.json`, a tiktoken rank file, or trained on text.
 *
 * Encoding: cut the text at added tokens (each becomes its id), normalise, pre-tokenise into
 * words, and BPE-merge the UTF-8 bytes of each word by merge priority (bpe.ts). Words are
 * cached (string → ids), so repeated words cost one map lookup. Decoding concatenates the
 * bytes of the tokens (added tokens contribute their text) and decodes UTF-8 once at the end,
 * so a character split across tokens decodes whole and only invalid bytes become U+FFFD.
 */
import { type AddedToken, addedToken, AddedTokenSplitter } from "./added_tokens.ts";
import { byteLevelToBytes, bytesToByteLevel } from "./byte_level.ts";
import { MergeTable, mergeWord } from "./bpe.ts";
import { hfTokenizerJson, parseHfTokenizerJson, type TokenizerSpec } from "./hf_json.ts";
import { KIMI_K2_PATTERN } from "./patterns.ts";
import {
  buildNormalizer,
  buildPreTokenizer,
  type HfComponent,
  type PreTokenizer,
  splitThenByteLevel,
} from "./pretokenize.ts";
import { parseTiktokenRanks } from "./tiktoken.ts";
import { countWords, trainBpe } from "./trainer.ts";
import type { DecodeOptions, EncodeOptions, TextTokenizer } from "./types.ts";
import { validUtf8Length } from "./utf8.ts";

/** Words longer than this (UTF-16 units) are not cached. */
const CACHE_WORD = 256;
/** The cache is cleared when it holds this many words. */
const CACHE_SIZE = 1 << 17;

/**
 * Options of `Tokenizer.train`.
 *
 * @example
 * ```ts
 * import type { TrainOptions } from "./tokenizer.ts";
 * const o: TrainOptions = { vocabSize: 2048, specialTokens: ["<|endoftext|>"] };
 * console.log(o.vocabSize);
 * ```
 */
export interface TrainOptions {
  /** Vocabulary size: 256 byte tokens + merges + special tokens. */
  vocabSize: number;
  /** Split pattern (Oniguruma dialect; default Kimi K2's). */
  pattern?: string;
  /** Special tokens, given the last ids (default none). */
  specialTokens?: string[];
  /** Stop merging when the best pair is rarer than this (default 2). */
  minFrequency?: number;
}

/**
 * Options of `Tokenizer.fromTiktoken`.
 *
 * @example
 * ```ts
 * import type { TiktokenOptions } from "./tokenizer.ts";
 * const o: TiktokenOptions = { specialTokens: { "[BOS]": 163584, "[EOS]": 163585 } };
 * console.log(o.specialTokens);
 * ```
 */
export interface TiktokenOptions {
  /** Split pattern (Oniguruma dialect; default Kimi K2's). */
  pattern?: string;
  /** Special tokens: text → id. */
  specialTokens?: Record<string, number> | Map<string, number>;
}

function exists(path: string): Promise<boolean> {
  return Deno.stat(path).then(() => true, () => false);
}

/** Post-processing templates: ids before and after the sequence. */
interface Template {
  before: number[];
  after: number[];
}

function buildTemplate(c: HfComponent | null): Template | null {
  if (c === null || c.type === "ByteLevel") return null;
  if (c.type === "Sequence" && Array.isArray(c.processors)) {
    const ts = (c.processors as HfComponent[]).map(buildTemplate).filter((t) => t !== null);
    if (ts.length > 1) throw new Error("tokenizer.json: more than one TemplateProcessing");
    return ts[0] ?? null;
  }
  if (c.type === "TemplateProcessing" && Array.isArray(c.single)) {
    const specials = (c.special_tokens ?? {}) as Record<string, { ids: number[] }>;
    const t: Template = { before: [], after: [] };
    let seen = false;
    for (const item of c.single as Record<string, { id: string }>[]) {
      if (item.Sequence) seen = true;
      else if (item.SpecialToken) {
        const ids = specials[item.SpecialToken.id]?.ids;
        if (!ids) throw new Error(`post_processor: no ids for ${item.SpecialToken.id}`);
        (seen ? t.after : t.before).push(...ids);
      }
    }
    return t;
  }
  throw new Error(
    `tokenizer.json: post_processor type ${
      JSON.stringify(c.type)
    } is not supported (supported: null, ByteLevel, TemplateProcessing, Sequence)`,
  );
}

/**
 * A byte-level BPE tokenizer (see the module doc).
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * const tok = Tokenizer.train("the cat sat on the mat. the end.", { vocabSize: 270 });
 * const ids = tok.encode("the mat");
 * console.log(ids.length < 7, tok.decode(ids)); // true "the mat"
 * ```
 */
export class Tokenizer implements TextTokenizer {
  readonly #spec: TokenizerSpec;
  readonly #bytes: (Uint8Array | undefined)[] = [];
  readonly #strings: (string | undefined)[] = [];
  readonly #ids = new Map<string, number>();
  readonly #byteIds = new Int32Array(256).fill(-1);
  readonly #merges = new MergeTable();
  readonly #special = new Set<number>();
  readonly #splitter: AddedTokenSplitter | null;
  readonly #preTokenizer: PreTokenizer;
  readonly #normalize: ((s: string) => string) | null;
  readonly #template: Template | null;
  readonly #unk: number;
  readonly #cache = new Map<string, number[]>();
  readonly #encoder = new TextEncoder();
  /** One more than the largest id. */
  readonly vocabSize: number;

  /**
   * Builds a tokenizer from a spec (as `parseHfTokenizerJson` returns); throws an Error when
   * it is not byte-level BPE this class implements.
   */
  constructor(spec: TokenizerSpec) {
    this.#spec = spec;
    const enc = this.#encoder;
    spec.vocab.forEach((s, id) => {
      if (s === undefined) return;
      this.#strings[id] = s;
      this.#ids.set(s, id);
      const b = byteLevelToBytes(s);
      this.#bytes[id] = b ?? enc.encode(s);
      if (b !== null && b.length === 1 && this.#byteIds[b[0]] < 0) this.#byteIds[b[0]] = id;
    });
    for (const t of spec.addedTokens) {
      this.#strings[t.id] = t.content;
      this.#bytes[t.id] = enc.encode(t.content);
      this.#ids.set(t.content, t.id);
      if (t.special) this.#special.add(t.id);
    }
    spec.merges.forEach(([l, r], i) => {
      const joined = this.#ids.get(spec.vocab[l]! + spec.vocab[r]!);
      if (joined === undefined) {
        throw new Error(`merge ${i} (${spec.vocab[l]}, ${spec.vocab[r]}): joined token missing`);
      }
      this.#merges.add(l, r, spec.mergeRanks?.[i] ?? i, joined);
    });
    this.#splitter = spec.addedTokens.length > 0 ? new AddedTokenSplitter(spec.addedTokens) : null;
    this.#preTokenizer = buildPreTokenizer(spec.preTokenizer);
    if (!this.#preTokenizer.byteLevel) {
      throw new Error(
        "tokenizer.json: the pre_tokenizer has no ByteLevel step; only byte-level BPE " +
          "(GPT-2 style) is supported",
      );
    }
    if (spec.decoder !== null && spec.decoder.type !== "ByteLevel") {
      throw new Error(
        `tokenizer.json: decoder type ${JSON.stringify(spec.decoder.type)} is not supported ` +
          "(only ByteLevel)",
      );
    }
    this.#normalize = buildNormalizer(spec.normalizer);
    this.#template = buildTemplate(spec.postProcessor);
    this.#unk = spec.unkToken === null ? -1 : this.#ids.get(spec.unkToken)!;
    this.vocabSize = Math.max(this.#strings.length, this.#bytes.length);
  }

  /** Reads `tokenizer.json` text (or its parsed JSON). */
  static fromHfJson(json: string | object): Tokenizer {
    return new Tokenizer(parseHfTokenizerJson(json));
  }

  /**
   * Builds a tokenizer from tiktoken rank-file text (`base64 rank` lines), with the split
   * pattern (default Kimi K2's) and special tokens. Like tiktoken, a word that is itself a
   * token encodes as that token (`ignore_merges`).
   */
  static fromTiktokenText(text: string, options: TiktokenOptions = {}): Tokenizer {
    const r = parseTiktokenRanks(text);
    const specials = options.specialTokens instanceof Map
      ? [...options.specialTokens]
      : Object.entries(options.specialTokens ?? {});
    return new Tokenizer({
      vocab: r.vocab,
      merges: r.merges,
      mergeRanks: r.mergeRanks,
      addedTokens: specials.map(([content, id]) =>
        addedToken({ id, content, special: true, normalized: false })
      ),
      normalizer: null,
      preTokenizer: splitThenByteLevel(options.pattern ?? KIMI_K2_PATTERN),
      postProcessor: null,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      unkToken: null,
      fuseUnk: false,
      ignoreMerges: true,
    });
  }

  /** Reads a tiktoken rank file (e.g. Kimi K2's `tiktoken.model`); see `fromTiktokenText`. */
  static async fromTiktoken(path: string, options: TiktokenOptions = {}): Promise<Tokenizer> {
    return Tokenizer.fromTiktokenText(await Deno.readTextFile(path), options);
  }

  /**
   * Loads a tokenizer from a directory (its `tokenizer.json`, else its `tiktoken.model` with
   * the special tokens of `tokenizer_config.json`'s `added_tokens_decoder`), a
   * `tokenizer.json` file, or a tiktoken rank file.
   */
  static async load(path: string): Promise<Tokenizer> {
    const st = await Deno.stat(path);
    if (st.isFile) {
      return path.endsWith(".json")
        ? Tokenizer.fromHfJson(await Deno.readTextFile(path))
        : Tokenizer.fromTiktoken(path);
    }
    const dir = path.replace(/\/+$/, "");
    if (await exists(`${dir}/tokenizer.json`)) {
      return Tokenizer.fromHfJson(await Deno.readTextFile(`${dir}/tokenizer.json`));
    }
    if (await exists(`${dir}/tiktoken.model`)) {
      const specialTokens = new Map<string, number>();
      if (await exists(`${dir}/tokenizer_config.json`)) {
        const cfg = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
        for (const [id, t] of Object.entries(cfg.added_tokens_decoder ?? {})) {
          specialTokens.set((t as { content: string }).content, Number(id));
        }
      }
      return Tokenizer.fromTiktoken(`${dir}/tiktoken.model`, { specialTokens });
    }
    throw new Error(`${dir} has neither tokenizer.json nor tiktoken.model`);
  }

  /**
   * Trains byte-level BPE on text (see trainer.ts): 256 byte tokens (id = byte), then the
   * merges in the order learned, then the special tokens. Fewer merges are learned when no
   * pair repeats `minFrequency` times; `vocabSize` is then smaller than asked.
   */
  static train(texts: string | Iterable<string>, options: TrainOptions): Tokenizer {
    const pattern = options.pattern ?? KIMI_K2_PATTERN;
    const specials = options.specialTokens ?? [];
    if (new Set(specials).size !== specials.length || specials.some((t) => t.length === 0)) {
      throw new Error(
        `specialTokens must be distinct and non-empty, got ${JSON.stringify(specials)}`,
      );
    }
    const merges = options.vocabSize - 256 - specials.length;
    if (!Number.isInteger(options.vocabSize) || merges < 0) {
      throw new Error(
        `vocabSize must be an integer >= 256 + ${specials.length} special tokens, got ${options.vocabSize}`,
      );
    }
    const words = countWords(typeof texts === "string" ? [texts] : texts, pattern);
    const t = trainBpe(words, { merges, minFrequency: options.minFrequency });
    const vocab = t.tokens.map(bytesToByteLevel);
    return new Tokenizer({
      vocab,
      merges: t.merges,
      addedTokens: specials.map((content, i) =>
        addedToken({ id: vocab.length + i, content, special: true, normalized: false })
      ),
      normalizer: null,
      preTokenizer: splitThenByteLevel(pattern),
      postProcessor: {
        type: "ByteLevel",
        add_prefix_space: true,
        trim_offsets: false,
        use_regex: true,
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      unkToken: null,
      fuseUnk: false,
      ignoreMerges: false,
    });
  }

  /** A short description of the tokenizer. */
  get description(): string {
    return `byte-level BPE, ${this.vocabSize} tokens (${this.#merges.size} merges)`;
  }

  /** The added tokens (special tokens and others that match whole in text). */
  get addedTokens(): readonly AddedToken[] {
    return this.#spec.addedTokens;
  }

  /** The BPE ids of one pre-tokenised word. */
  #word(word: string): number[] {
    const cached = this.#cache.get(word);
    if (cached !== undefined) return cached;
    const bytes = this.#encoder.encode(word);
    let ids: number[] | undefined;
    if (this.#spec.ignoreMerges) {
      const whole = this.#ids.get(bytesToByteLevel(bytes));
      if (whole !== undefined && !this.#special.has(whole)) ids = [whole];
    }
    if (ids === undefined) {
      const parts: number[] = new Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) parts[i] = this.#byteId(bytes[i]);
      ids = mergeWord(this.#unk >= 0 ? this.#fuseUnk(parts) : parts, this.#merges);
    }
    if (word.length <= CACHE_WORD) {
      if (this.#cache.size >= CACHE_SIZE) this.#cache.clear();
      this.#cache.set(word, ids);
    }
    return ids;
  }

  #byteId(b: number): number {
    const id = this.#byteIds[b];
    if (id >= 0) return id;
    if (this.#unk >= 0) return this.#unk;
    throw new RangeError(
      `byte 0x${b.toString(16).padStart(2, "0")} has no token in this vocabulary and there is ` +
        "no unk_token",
    );
  }

  /** Fuses runs of the unknown token when `fuse_unk` is set. */
  #fuseUnk(parts: number[]): number[] {
    if (!this.#spec.fuseUnk) return parts;
    return parts.filter((id, i) => id !== this.#unk || parts[i - 1] !== this.#unk);
  }

  #encodeText(text: string, out: number[]): void {
    const t = this.#normalize ? this.#normalize(text) : text;
    this.#preTokenizer.split(t, (w) => {
      const ids = this.#word(w);
      for (let i = 0; i < ids.length; i++) out.push(ids[i]);
    });
  }

  #encodeInto(text: string, options: EncodeOptions, out: number[]): void {
    if (this.#splitter === null) {
      this.#encodeText(text, out);
      return;
    }
    for (const seg of this.#splitter.split(text, options.allowedSpecial ?? "all")) {
      if (typeof seg === "number") out.push(seg);
      else this.#encodeText(seg, out);
    }
  }

  #wrap(out: number[], options: EncodeOptions): number[] {
    if (!options.addSpecialTokens || this.#template === null) return out;
    return [...this.#template.before, ...out, ...this.#template.after];
  }

  /** Token ids of a string. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const out: number[] = [];
    this.#encodeInto(text, options, out);
    return this.#wrap(out, options);
  }

  /** Token ids of a string, as an Int32Array. */
  encodeInt32(text: string, options: EncodeOptions = {}): Int32Array {
    return Int32Array.from(this.encode(text, options));
  }

  /**
   * Token ids of arbitrary bytes: valid UTF-8 runs encode as text, each other byte as its
   * byte token, so `decodeBytes(encodeBytes(b))` is `b`.
   */
  encodeBytes(bytes: Uint8Array, options: EncodeOptions = {}): Int32Array {
    const dec = new TextDecoder("utf-8", { ignoreBOM: true });
    const out: number[] = [];
    for (let i = 0; i < bytes.length;) {
      const n = validUtf8Length(bytes, i);
      if (n > 0) {
        this.#encodeInto(dec.decode(bytes.subarray(i, i + n)), options, out);
        i += n;
      } else out.push(this.#byteId(bytes[i++]));
    }
    return Int32Array.from(this.#wrap(out, options));
  }

  /** The bytes of token ids; an id that is not a token is a RangeError. */
  decodeBytes(ids: ArrayLike<number>, options: DecodeOptions = {}): Uint8Array {
    const skip = options.skipSpecialTokens === true;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const b = this.#bytes[id];
      if (b === undefined) {
        throw new RangeError(`token id ${id} at position ${i} is not in the vocabulary`);
      }
      if (skip && this.#special.has(id)) continue;
      parts.push(b);
      total += b.length;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Text of token ids; bytes that are not valid UTF-8 become U+FFFD. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids, options));
  }

  /** The id of a token string (byte-level text as in `tokenizer.json`, or an added token). */
  tokenToId(token: string): number | undefined {
    return this.#ids.get(token);
  }

  /** The token string of an id (byte-level text, or an added token's content). */
  idToToken(id: number): string | undefined {
    return this.#strings[id];
  }

  /** The bytes of one token (a view; do not modify). */
  tokenBytes(id: number): Uint8Array | undefined {
    return this.#bytes[id];
  }

  /** The `tokenizer.json` text. */
  toHfJson(): string {
    // Merges are kept in priority order, so a line index is a valid Hugging Face rank (for
    // tiktoken pairs, ties of one token's splits keep their order).
    return hfTokenizerJson(this.#spec);
  }

  /** Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if missing). */
  async save(dir: string): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/tokenizer.json`, this.toHfJson());
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, tokenizerConfigJson(this));
  }
}

/**
 * `tokenizer_config.json` for `transformers`' `AutoTokenizer`: the fast tokenizer class reading
 * `tokenizer.json`, with the added tokens listed by id.
 *
 * @example
 * ```ts
 * import { Tokenizer, tokenizerConfigJson } from "./tokenizer.ts";
 * const tok = Tokenizer.train("abab", { vocabSize: 258, specialTokens: ["<eot>"] });
 * console.log(JSON.parse(tokenizerConfigJson(tok)).tokenizer_class); // "PreTrainedTokenizerFast"
 * ```
 */
export function tokenizerConfigJson(tok: { addedTokens: readonly AddedToken[] }): string {
  const decoder: Record<string, unknown> = {};
  for (const t of tok.addedTokens) {
    const { id: _id, ...rest } = t;
    decoder[String(t.id)] = rest;
  }
  return JSON.stringify(
    {
      tokenizer_class: "PreTrainedTokenizerFast",
      clean_up_tokenization_spaces: false,
      added_tokens_decoder: decoder,
    },
    null,
    2,
  ) + "\n";
}
