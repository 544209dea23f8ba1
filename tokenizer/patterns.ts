/**
 * Pre-tokenisation split patterns, written in the dialect of the reference engines
 * (Oniguruma in Hugging Face `tokenizers`, Rust `regex`/`fancy-regex` in tiktoken), exactly as
 * they appear in `tokenizer.json` files and tokenizer sources. `compileSplitPattern`
 * (regex.ts) translates them into JavaScript regular expressions; files we write keep this
 * dialect so that Hugging Face loads them unchanged.
 *
 * Each pattern splits text into words before BPE: letters with an optional leading
 * non-letter (usually a space) and English contractions, numbers in groups of up to three
 * digits (GPT-2: any length), punctuation runs, newlines, and whitespace, where a run of
 * spaces leaves its last space to the word that follows.
 */

/**
 * GPT-2's pattern (also Hugging Face `ByteLevel` with `use_regex: true`).
 *
 * @example
 * ```ts
 * import { GPT2_PATTERN } from "./patterns.ts";
 * import { compileSplitPattern } from "./regex.ts";
 * const re = compileSplitPattern(GPT2_PATTERN);
 * console.log("it's 2024".match(re)); // ["it", "'s", " 2024"]
 * ```
 */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/**
 * GPT-4o's pattern (tiktoken `o200k_base`): case-aware words, so `CamelCase` splits in two.
 *
 * @example
 * ```ts
 * import { GPT4O_PATTERN } from "./patterns.ts";
 * import { compileSplitPattern } from "./regex.ts";
 * console.log("HelloWorld 12345".match(compileSplitPattern(GPT4O_PATTERN)));
 * // ["Hello", "World", " ", "123", "45"]
 * ```
 */
export const GPT4O_PATTERN: string = [
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
  "\\p{N}{1,3}",
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
  "\\s*[\\r\\n]+",
  "\\s+(?!\\S)",
  "\\s+",
].join("|");

/**
 * Kimi K2's pattern (`tokenization_kimi.py`): GPT-4o's, with runs of Han characters as words
 * of their own (class intersection `&&` removes Han from the letter classes).
 *
 * @example
 * ```ts
 * import { KIMI_K2_PATTERN } from "./patterns.ts";
 * import { compileSplitPattern } from "./regex.ts";
 * console.log("mixed中文text".match(compileSplitPattern(KIMI_K2_PATTERN)));
 * // ["mixed", "中文", "text"]
 * ```
 */
export const KIMI_K2_PATTERN: string = [
  "[\\p{Han}]+",
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
  "\\p{N}{1,3}",
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*",
  "\\s*[\\r\\n]+",
  "\\s+(?!\\S)",
  "\\s+",
].join("|");

/**
 * Patterns by the short names the command line accepts (`--pattern kimi`).
 *
 * @example
 * ```ts
 * import { NAMED_PATTERNS } from "./patterns.ts";
 * console.log(Object.keys(NAMED_PATTERNS)); // ["kimi", "gpt4o", "gpt2"]
 * ```
 */
export const NAMED_PATTERNS: Readonly<Record<string, string>> = {
  kimi: KIMI_K2_PATTERN,
  gpt4o: GPT4O_PATTERN,
  gpt2: GPT2_PATTERN,
};
