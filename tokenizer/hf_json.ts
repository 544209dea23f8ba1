/**
 * Hugging Face `tokenizer.json` for byte-level BPE: reading into a `TokenizerSpec` and writing
 * one back in the structure `tokenizers` writes (version, truncation, padding, added_tokens,
 * normalizer, pre_tokenizer, post_processor, decoder, model).
 *
 * Reading accepts `model.type` "BPE" with `vocab` (token → id) and `merges` in either form,
 * `"left right"` strings or `["left", "right"]` pairs; every merge's parts and joined token
 * must be in the vocabulary. Options that change encoding and are not implemented here
 * (dropout, word prefixes/suffixes, non-byte-level pre-tokenizers or decoders) are errors,
 * never silently ignored; `truncation` and `padding` (batching settings) are not applied.
 * Writing puts one vocabulary entry and one merge per line, in id / priority order, and
 * writes merges as strings (readable by every `tokenizers` version) unless a part contains a
 * space.
 */
import { type AddedToken, addedToken } from "./added_tokens.ts";
import type { HfComponent } from "./pretokenize.ts";

/**
 * Everything a BPE tokenizer is made of, in Hugging Face terms.
 *
 * @example
 * ```ts
 * import type { TokenizerSpec } from "./hf_json.ts";
 * const spec: TokenizerSpec = {
 *   vocab: ["a", "b", "ab"], merges: [[0, 1]], addedTokens: [], normalizer: null,
 *   preTokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: false },
 *   postProcessor: null, decoder: { type: "ByteLevel" }, unkToken: null, fuseUnk: false,
 *   ignoreMerges: false,
 * };
 * console.log(spec.merges);
 * ```
 */
export interface TokenizerSpec {
  /** Token strings by id (byte-level text; undefined where an id is unused). */
  vocab: (string | undefined)[];
  /** Merges as id pairs, highest priority first. */
  merges: [number, number][];
  /** Priority of each merge (lower first); default: its index. tiktoken uses token ranks. */
  mergeRanks?: number[];
  /** Added (special) tokens. */
  addedTokens: AddedToken[];
  /** `normalizer` JSON. */
  normalizer: HfComponent | null;
  /** `pre_tokenizer` JSON. */
  preTokenizer: HfComponent | null;
  /** `post_processor` JSON. */
  postProcessor: HfComponent | null;
  /** `decoder` JSON. */
  decoder: HfComponent | null;
  /** Token for bytes missing from the vocabulary (null: missing bytes are an error). */
  unkToken: string | null;
  /** Fuse consecutive unknown tokens into one. */
  fuseUnk: boolean;
  /** Emit a word that is itself a token without merging (Hugging Face `ignore_merges`). */
  ignoreMerges: boolean;
}

function fail(msg: string): never {
  throw new Error(`tokenizer.json: ${msg}`);
}

function component(v: unknown, name: string): HfComponent | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== "object" || typeof (v as HfComponent).type !== "string") {
    fail(`${name} must be null or an object with a "type"`);
  }
  return v as HfComponent;
}

/**
 * Reads a `tokenizer.json` (text or parsed) into a spec; throws an Error naming the first
 * problem.
 *
 * @example
 * ```ts
 * import { parseHfTokenizerJson } from "./hf_json.ts";
 * const spec = parseHfTokenizerJson({
 *   added_tokens: [],
 *   pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
 *   decoder: { type: "ByteLevel" },
 *   model: { type: "BPE", vocab: { h: 0, i: 1, hi: 2 }, merges: ["h i"] },
 * });
 * console.log(spec.merges); // [[0, 1]]
 * ```
 */
export function parseHfTokenizerJson(input: string | object): TokenizerSpec {
  let j: Record<string, unknown>;
  try {
    j = (typeof input === "string" ? JSON.parse(input) : input) as Record<string, unknown>;
  } catch (e) {
    fail(`not JSON (${(e as Error).message})`);
  }
  if (typeof j !== "object" || j === null) fail("not a JSON object");
  const model = j.model as Record<string, unknown> | undefined;
  if (!model || typeof model !== "object") fail(`no "model"`);
  if (model.type !== undefined && model.type !== "BPE") {
    fail(`model type ${JSON.stringify(model.type)} is not supported (only "BPE")`);
  }
  if (model.dropout !== null && model.dropout !== undefined && model.dropout !== 0) {
    fail(`model.dropout ${model.dropout} is not supported (BPE dropout; use null)`);
  }
  for (const k of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    if (model[k] !== null && model[k] !== undefined && model[k] !== "") {
      fail(`model.${k} ${JSON.stringify(model[k])} is not supported (byte-level BPE has none)`);
    }
  }
  const rawVocab = model.vocab as Record<string, unknown> | undefined;
  if (!rawVocab || typeof rawVocab !== "object") fail(`no model.vocab object`);
  const vocab: (string | undefined)[] = [];
  const ids = new Map<string, number>();
  for (const [tok, id] of Object.entries(rawVocab)) {
    if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= 2 ** 24) {
      fail(`vocab entry ${JSON.stringify(tok)} has id ${id}; expected an integer in [0, 2^24)`);
    }
    const i = id as number;
    if (vocab[i] !== undefined) {
      fail(`id ${i} is used by both ${JSON.stringify(vocab[i])} and ${JSON.stringify(tok)}`);
    }
    vocab[i] = tok;
    ids.set(tok, i);
  }
  const rawMerges = model.merges ?? [];
  if (!Array.isArray(rawMerges)) fail(`model.merges must be an array`);
  const merges: [number, number][] = rawMerges.map((m, n) => {
    let parts: unknown[];
    if (typeof m === "string") {
      parts = m.split(" ");
    } else if (Array.isArray(m)) parts = m;
    else fail(`merge ${n} is ${JSON.stringify(m)}; expected "a b" or ["a", "b"]`);
    if (parts.length !== 2 || typeof parts[0] !== "string" || typeof parts[1] !== "string") {
      fail(`merge ${n} ${JSON.stringify(m)} does not have exactly two parts`);
    }
    const [a, b] = parts as [string, string];
    const l = ids.get(a), r = ids.get(b);
    if (l === undefined || r === undefined || !ids.has(a + b)) {
      const missing = l === undefined ? a : r === undefined ? b : a + b;
      fail(`merge ${n} ${JSON.stringify(m)}: ${JSON.stringify(missing)} is not in the vocab`);
    }
    return [l, r];
  });
  const rawAdded = j.added_tokens ?? [];
  if (!Array.isArray(rawAdded)) fail(`added_tokens must be an array`);
  const addedTokens = rawAdded.map((t, n) => {
    if (!t || !Number.isInteger(t.id) || t.id < 0 || typeof t.content !== "string") {
      fail(`added_tokens[${n}] needs an integer "id" and a string "content"`);
    }
    return addedToken(t);
  });
  const unk = model.unk_token;
  if (unk !== null && unk !== undefined && !ids.has(unk as string)) {
    fail(`model.unk_token ${JSON.stringify(unk)} is not in the vocab`);
  }
  return {
    vocab,
    merges,
    addedTokens,
    normalizer: component(j.normalizer, "normalizer"),
    preTokenizer: component(j.pre_tokenizer, "pre_tokenizer"),
    postProcessor: component(j.post_processor, "post_processor"),
    decoder: component(j.decoder, "decoder"),
    unkToken: (unk as string | null | undefined) ?? null,
    fuseUnk: model.fuse_unk === true,
    ignoreMerges: model.ignore_merges === true,
  };
}

function indent(text: string, pad: string): string {
  return text.split("\n").join("\n" + pad);
}

/**
 * Writes a spec as `tokenizer.json` text (2-space indented, as `tokenizers` saves it).
 *
 * @example
 * ```ts
 * import { hfTokenizerJson, parseHfTokenizerJson } from "./hf_json.ts";
 * const spec = parseHfTokenizerJson({
 *   pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
 *   decoder: { type: "ByteLevel" },
 *   model: { type: "BPE", vocab: { h: 0, i: 1, hi: 2 }, merges: [["h", "i"]] },
 * });
 * console.log(hfTokenizerJson(spec).includes('"h i"')); // true
 * ```
 */
export function hfTokenizerJson(spec: TokenizerSpec): string {
  const p = (v: unknown) => indent(JSON.stringify(v, null, 2), "  ");
  const added = spec.addedTokens.map((t) => ({
    id: t.id,
    content: t.content,
    single_word: t.single_word,
    lstrip: t.lstrip,
    rstrip: t.rstrip,
    normalized: t.normalized,
    special: t.special,
  }));
  const vocabLines: string[] = [];
  spec.vocab.forEach((tok, id) => {
    if (tok !== undefined) vocabLines.push(`      ${JSON.stringify(tok)}: ${id}`);
  });
  const asPairs = spec.merges.some(([l, r]) =>
    spec.vocab[l]!.includes(" ") || spec.vocab[r]!.includes(" ")
  );
  const mergeLines = spec.merges.map(([l, r]) =>
    "      " +
    (asPairs
      ? JSON.stringify([spec.vocab[l], spec.vocab[r]])
      : JSON.stringify(`${spec.vocab[l]} ${spec.vocab[r]}`))
  );
  const block = (lines: string[], open: string, close: string) =>
    lines.length === 0 ? `${open}${close}` : `${open}\n${lines.join(",\n")}\n    ${close}`;
  return [
    "{",
    `  "version": "1.0",`,
    `  "truncation": null,`,
    `  "padding": null,`,
    `  "added_tokens": ${p(added)},`,
    `  "normalizer": ${p(spec.normalizer)},`,
    `  "pre_tokenizer": ${p(spec.preTokenizer)},`,
    `  "post_processor": ${p(spec.postProcessor)},`,
    `  "decoder": ${p(spec.decoder)},`,
    `  "model": {`,
    `    "type": "BPE",`,
    `    "dropout": null,`,
    `    "unk_token": ${JSON.stringify(spec.unkToken)},`,
    `    "continuing_subword_prefix": null,`,
    `    "end_of_word_suffix": null,`,
    `    "fuse_unk": ${spec.fuseUnk},`,
    `    "byte_fallback": false,`,
    `    "ignore_merges": ${spec.ignoreMerges},`,
    `    "vocab": ${block(vocabLines, "{", "}")},`,
    `    "merges": ${block(mergeLines, "[", "]")}`,
    `  }`,
    "}",
    "",
  ].join("\n");
}
