/**
 * Added tokens (Hugging Face `added_tokens`; special tokens such as `<|endoftext|>`): strings
 * that encode as one id wherever they occur in the text, before pre-tokenisation.
 *
 * The text is cut at the leftmost-longest occurrence of any allowed token (one regex, the
 * escaped contents longest first); `single_word` tokens only match between non-word
 * characters; `lstrip` / `rstrip` tokens also swallow the whitespace on their left / right.
 * Tokens marked `special` match only when the caller allows them (all by default, as in
 * Hugging Face; `"none"` encodes them as plain text, like tiktoken's `disallowed_special=()`).
 * The `normalized` flag is kept for saving; matching is always on the text as given.
 */

/**
 * One added token, with Hugging Face's field names.
 *
 * @example
 * ```ts
 * import type { AddedToken } from "./added_tokens.ts";
 * const eot: AddedToken = {
 *   id: 256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false,
 *   normalized: false, special: true,
 * };
 * console.log(eot.content);
 * ```
 */
export interface AddedToken {
  /** Token id. */
  id: number;
  /** The exact text of the token. */
  content: string;
  /** Match only as a whole word. */
  single_word: boolean;
  /** Swallow whitespace on the left. */
  lstrip: boolean;
  /** Swallow whitespace on the right. */
  rstrip: boolean;
  /** Whether Hugging Face matches it on normalised text (kept for saving). */
  normalized: boolean;
  /** A special (control) token: gated by `allowedSpecial`, dropped by `skipSpecialTokens`. */
  special: boolean;
}

/**
 * Which special tokens may match in text: all, none, or the listed contents.
 *
 * @example
 * ```ts
 * import type { AllowedSpecial } from "./added_tokens.ts";
 * const only: AllowedSpecial = new Set(["<|endoftext|>"]);
 * console.log(only);
 * ```
 */
export type AllowedSpecial = "all" | "none" | ReadonlySet<string>;

/**
 * A filled-in added token from partial JSON (Hugging Face defaults: not special, no
 * stripping, normalized unless special).
 *
 * @example
 * ```ts
 * import { addedToken } from "./added_tokens.ts";
 * console.log(addedToken({ id: 5, content: "<s>", special: true }).normalized); // false
 * ```
 */
export function addedToken(t: Partial<AddedToken> & { id: number; content: string }): AddedToken {
  const special = t.special === true;
  return {
    id: t.id,
    content: t.content,
    single_word: t.single_word === true,
    lstrip: t.lstrip === true,
    rstrip: t.rstrip === true,
    normalized: t.normalized ?? !special,
    special,
  };
}

const WORD = /[\p{L}\p{N}_]/u;

/**
 * Splits text at added tokens: text segments stay strings, tokens become their ids.
 *
 * @example
 * ```ts
 * import { addedToken, AddedTokenSplitter } from "./added_tokens.ts";
 * const s = new AddedTokenSplitter([addedToken({ id: 9, content: "<eot>", special: true })]);
 * console.log(s.split("a<eot>b", "all")); // ["a", 9, "b"]
 * console.log(s.split("a<eot>b", "none")); // ["a<eot>b"]
 * ```
 */
export class AddedTokenSplitter {
  readonly #tokens: AddedToken[];
  readonly #byContent = new Map<string, AddedToken>();
  readonly #regexes = new Map<string, RegExp | null>();

  /** Creates a splitter for these tokens. */
  constructor(tokens: readonly AddedToken[]) {
    this.#tokens = [...tokens];
    for (const t of tokens) if (t.content.length > 0) this.#byContent.set(t.content, t);
  }

  #regex(allowed: AllowedSpecial): RegExp | null {
    const key = typeof allowed === "string" ? allowed : [...allowed].sort().join("\u0000");
    if (this.#regexes.has(key)) return this.#regexes.get(key)!;
    const ok = (t: AddedToken) =>
      t.content.length > 0 &&
      (!t.special || allowed === "all" || (allowed !== "none" && allowed.has(t.content)));
    const contents = [...new Set(this.#tokens.filter(ok).map((t) => t.content))]
      .sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    const re = contents.length === 0 ? null : new RegExp(
      contents.map((c) => c.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&")).join("|"),
      "gu",
    );
    if (this.#regexes.size > 16) this.#regexes.clear();
    this.#regexes.set(key, re);
    return re;
  }

  /** Text segments (strings, possibly empty-free) and token ids, in order. */
  split(text: string, allowed: AllowedSpecial): (string | number)[] {
    const re = this.#regex(allowed);
    if (re === null) return text.length > 0 ? [text] : [];
    const out: (string | number)[] = [];
    let prev = 0;
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const t = this.#byContent.get(m[0])!;
      let start = m.index;
      let end = start + m[0].length;
      if (
        t.single_word &&
        ((start > 0 && WORD.test(text[start - 1])) || (end < text.length && WORD.test(text[end])))
      ) {
        re.lastIndex = start + 1;
        continue;
      }
      if (t.lstrip) { while (start > prev && /\s/u.test(text[start - 1])) start--; }
      if (t.rstrip) { while (end < text.length && /\s/u.test(text[end])) end++; }
      if (start > prev) out.push(text.slice(prev, start));
      out.push(t.id);
      prev = end;
      re.lastIndex = end;
    }
    if (prev < text.length) out.push(text.slice(prev));
    return out;
  }
}
