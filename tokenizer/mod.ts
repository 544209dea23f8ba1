/**
 * Tokenizers: byte-level BPE that trains on text, reads and writes Hugging Face
 * `tokenizer.json`, and reads tiktoken rank files (Kimi K2's `tiktoken.model`); and a
 * byte-identity tokenizer with the same interface.
 *
 * ```ts
 * import * as mg from "../mod.ts";
 * const tok = mg.tokenizer.Tokenizer.train("the cat sat on the mat", { vocabSize: 260 });
 * console.log(tok.decode(tok.encode("the mat"))); // "the mat"
 * ```
 * @module
 */
export {
  type AddedToken,
  addedToken,
  AddedTokenSplitter,
  type AllowedSpecial,
} from "./added_tokens.ts";
export { BYTE_TO_CHAR, byteLevelToBytes, bytesToByteLevel } from "./byte_level.ts";
export { MergeTable, mergeWord } from "./bpe.ts";
export { ByteTokenizer } from "./byte_tokenizer.ts";
export { hfTokenizerJson, parseHfTokenizerJson, type TokenizerSpec } from "./hf_json.ts";
export { GPT2_PATTERN, GPT4O_PATTERN, KIMI_K2_PATTERN, NAMED_PATTERNS } from "./patterns.ts";
export {
  buildNormalizer,
  buildPreTokenizer,
  type Emit,
  type HfComponent,
  type PreTokenizer,
  type SplitBehavior,
  splitByRegex,
  splitThenByteLevel,
} from "./pretokenize.ts";
export { compileSplitPattern } from "./regex.ts";
export { parseTiktokenRanks, type TiktokenRanks } from "./tiktoken.ts";
export {
  type TiktokenOptions,
  Tokenizer,
  tokenizerConfigJson,
  type TrainOptions,
} from "./tokenizer.ts";
export { countWords, trainBpe, type TrainBpeOptions, type TrainedBpe } from "./trainer.ts";
export type { DecodeOptions, EncodeOptions, TextTokenizer } from "./types.ts";
export { validUtf8Length } from "./utf8.ts";
