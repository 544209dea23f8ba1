/**
 * `ByteTokenizer`: the identity on UTF-8 bytes (vocabulary 256, id = byte value), with the
 * same interface as the BPE `Tokenizer`. It saves as a `tokenizer.json` holding the 256
 * byte-level tokens, no merges and a ByteLevel pre-tokenizer without a split pattern, which
 * Hugging Face (and `Tokenizer.load`) read as the same byte-identity mapping.
 */
import { BYTE_TO_CHAR, byteLevelToBytes } from "./byte_level.ts";
import { hfTokenizerJson } from "./hf_json.ts";
import { tokenizerConfigJson } from "./tokenizer.ts";
import type { DecodeOptions, TextTokenizer } from "./types.ts";

/**
 * Bytes as tokens.
 *
 * @example
 * ```ts
 * import { ByteTokenizer } from "./byte_tokenizer.ts";
 * const tok = new ByteTokenizer();
 * console.log(tok.encode("hé"), tok.decode([104, 195, 169])); // [104, 195, 169] "hé"
 * ```
 */
export class ByteTokenizer implements TextTokenizer {
  /** 256. */
  readonly vocabSize = 256;
  /** "bytes (vocabulary 256)". */
  readonly description = "bytes (vocabulary 256)";
  readonly #encoder = new TextEncoder();

  /** The UTF-8 bytes of the text. */
  encode(text: string): number[] {
    return Array.from(this.#encoder.encode(text));
  }

  /** The UTF-8 bytes of the text, as an Int32Array. */
  encodeInt32(text: string): Int32Array {
    return Int32Array.from(this.#encoder.encode(text));
  }

  /** The bytes themselves. */
  encodeBytes(bytes: Uint8Array): Int32Array {
    return Int32Array.from(bytes);
  }

  /** The ids as bytes; an id outside 0..255 is a RangeError. */
  decodeBytes(ids: ArrayLike<number>, _options?: DecodeOptions): Uint8Array {
    const out = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < 256)) {
        throw new RangeError(`token id ${id} at position ${i} is not a byte (0..255)`);
      }
      out[i] = id;
    }
    return out;
  }

  /** The UTF-8 text of the bytes (invalid sequences become U+FFFD). */
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string {
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(this.decodeBytes(ids, options));
  }

  /** The byte of a one-character byte-level token string (e.g. "Ġ" → 32). */
  tokenToId(token: string): number | undefined {
    const b = token.length === 1 ? byteLevelToBytes(token) : null;
    return b === null ? undefined : b[0];
  }

  /** The byte-level character of a byte. */
  idToToken(id: number): string | undefined {
    return BYTE_TO_CHAR[id];
  }

  /** The `tokenizer.json` text (256 byte tokens, no merges). */
  toHfJson(): string {
    return hfTokenizerJson({
      vocab: [...BYTE_TO_CHAR],
      merges: [],
      addedTokens: [],
      normalizer: null,
      preTokenizer: {
        type: "ByteLevel",
        add_prefix_space: false,
        trim_offsets: true,
        use_regex: false,
      },
      postProcessor: null,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      unkToken: null,
      fuseUnk: false,
      ignoreMerges: false,
    });
  }

  /** Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if missing). */
  async save(dir: string): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/tokenizer.json`, this.toHfJson());
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      tokenizerConfigJson({ addedTokens: [] }),
    );
  }
}
