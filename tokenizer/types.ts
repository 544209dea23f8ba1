/**
 * The interface every tokenizer here implements (BPE `Tokenizer`, `ByteTokenizer`), so that
 * training and sampling take either.
 */
import type { AllowedSpecial } from "./added_tokens.ts";

/**
 * Options of `encode`.
 *
 * @example
 * ```ts
 * import type { EncodeOptions } from "./types.ts";
 * const plain: EncodeOptions = { allowedSpecial: "none" }; // "<|endoftext|>" stays text
 * console.log(plain);
 * ```
 */
export interface EncodeOptions {
  /**
   * Special tokens that encode as their id when their text occurs: "all" (default, as in
   * Hugging Face), "none" (encode them as ordinary text), or a set of token contents.
   * Non-special added tokens always match.
   */
  allowedSpecial?: AllowedSpecial;
  /**
   * Apply the post-processor's template (e.g. a BOS token) from a loaded `tokenizer.json`.
   * Default false (Hugging Face's `encode` defaults to true).
   */
  addSpecialTokens?: boolean;
}

/**
 * Options of `decode`.
 *
 * @example
 * ```ts
 * import type { DecodeOptions } from "./types.ts";
 * const o: DecodeOptions = { skipSpecialTokens: true };
 * console.log(o);
 * ```
 */
export interface DecodeOptions {
  /** Leave out special tokens (default false). */
  skipSpecialTokens?: boolean;
}

/**
 * A tokenizer: text ↔ token ids, losslessly on bytes.
 *
 * @example
 * ```ts
 * import type { TextTokenizer } from "./types.ts";
 * import { ByteTokenizer } from "./byte_tokenizer.ts";
 * const tok: TextTokenizer = new ByteTokenizer();
 * console.log(tok.decode(tok.encode("hé"))); // "hé"
 * ```
 */
export interface TextTokenizer {
  /** One more than the largest id (the model's `vocab_size`). */
  readonly vocabSize: number;
  /** A short description, e.g. "byte-level BPE, 2048 tokens". */
  readonly description: string;
  /** Token ids of a string. */
  encode(text: string, options?: EncodeOptions): number[];
  /** Token ids of a string, as an Int32Array. */
  encodeInt32(text: string, options?: EncodeOptions): Int32Array;
  /**
   * Token ids of arbitrary bytes: well-formed UTF-8 runs encode as text, every other byte as
   * its byte token, so `decodeBytes(encodeBytes(b))` equals `b`.
   */
  encodeBytes(bytes: Uint8Array, options?: EncodeOptions): Int32Array;
  /** Text of token ids (invalid UTF-8 becomes U+FFFD, as TextDecoder does). */
  decode(ids: ArrayLike<number>, options?: DecodeOptions): string;
  /** The bytes of token ids. */
  decodeBytes(ids: ArrayLike<number>, options?: DecodeOptions): Uint8Array;
  /** The id of a token string (Hugging Face form: byte-level text, or an added token). */
  tokenToId(token: string): number | undefined;
  /** The token string of an id. */
  idToToken(id: number): string | undefined;
  /** Writes `tokenizer.json` and `tokenizer_config.json` into a directory (created). */
  save(dir: string): Promise<void>;
  /** The `tokenizer.json` text. */
  toHfJson(): string;
}
