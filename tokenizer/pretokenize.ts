/**
 * Pre-tokenisation with Hugging Face `tokenizers` semantics: the `pre_tokenizer` of a
 * `tokenizer.json` (Sequence, Split, ByteLevel, Digits) and its `normalizer` (Unicode
 * normal forms) become functions on strings.
 *
 * A pipeline step maps every current piece to sub-pieces. `Split` finds the regex matches of a
 * piece, giving alternating gap / match spans that cover it, then combines them by behaviour:
 * Isolated (every span a piece), Removed (gaps only), MergedWithPrevious / MergedWithNext (a
 * match joins the gap before / after it), Contiguous (adjacent spans of the same kind join);
 * `invert` swaps the roles of gaps and matches. `ByteLevel` optionally prefixes a space and
 * splits with GPT-2's pattern; its byte mapping itself is implicit here, since BPE works on
 * the UTF-8 bytes of each piece.
 */
import { GPT2_PATTERN } from "./patterns.ts";
import { compileSplitPattern } from "./regex.ts";

/**
 * JSON of a Hugging Face pre-tokenizer or normalizer (`{"type": ..., ...}`).
 *
 * @example A pre-tokenizer component of tokenizer.json
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const c: mg.tokenizer.HfComponent = { type: "ByteLevel", add_prefix_space: false, use_regex: true };
 * ```
 */
export type HfComponent = { type: string; [key: string]: unknown };

/**
 * Split behaviours of Hugging Face's `Split` pre-tokenizer.
 *
 * @example Keep the separators as their own pieces
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const b: mg.tokenizer.SplitBehavior = "Isolated";
 * ```
 */
export type SplitBehavior =
  | "Isolated"
  | "Removed"
  | "MergedWithPrevious"
  | "MergedWithNext"
  | "Contiguous";

const BEHAVIORS: readonly SplitBehavior[] = [
  "Isolated",
  "Removed",
  "MergedWithPrevious",
  "MergedWithNext",
  "Contiguous",
];

/** A span [start, end) of a piece and whether it is a match. */
type Span = [number, number, boolean];

function spans(text: string, re: RegExp, invert: boolean): Span[] {
  const out: Span[] = [];
  let prev = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const start = m.index;
    const end = start + m[0].length;
    if (end === start) {
      re.lastIndex = end + (text.codePointAt(end)! > 0xffff ? 2 : 1);
      if (end >= text.length) break;
      continue;
    }
    if (prev !== start) out.push([prev, start, invert]);
    out.push([start, end, !invert]);
    prev = end;
  }
  if (prev !== text.length) out.push([prev, text.length, invert]);
  return out;
}

function combine(s: Span[], behavior: SplitBehavior): Span[] {
  const acc: Span[] = [];
  let previousMatch = false;
  switch (behavior) {
    case "Isolated":
      return s;
    case "Removed":
      return s.filter((x) => !x[2]);
    case "MergedWithPrevious":
      for (const x of s) {
        if (x[2] && !previousMatch && acc.length > 0) acc[acc.length - 1][1] = x[1];
        else acc.push(x);
        previousMatch = x[2];
      }
      return acc;
    case "MergedWithNext":
      for (let i = s.length - 1; i >= 0; i--) {
        const x = s[i];
        if (x[2] && !previousMatch && acc.length > 0) acc[acc.length - 1][0] = x[0];
        else acc.push(x);
        previousMatch = x[2];
      }
      return acc.reverse();
    case "Contiguous":
      for (const x of s) {
        if (x[2] === previousMatch && acc.length > 0) acc[acc.length - 1][1] = x[1];
        else acc.push(x);
        previousMatch = x[2];
      }
      return acc;
  }
}

/**
 * A consumer of pieces, called once per piece in order (the alternative to an output array in
 * {@linkcode splitByRegex}).
 *
 * @example Count the pieces instead of collecting them
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * let n = 0;
 * const count: mg.tokenizer.Emit = () => void n++;
 * mg.tokenizer.splitByRegex("a1b22", /\d+/gu, "Isolated", false, count);
 * console.log(n); // 4: "a", "1", "b", "22"
 * ```
 */
export type Emit = (piece: string) => void;

/**
 * Splits `text` by the matches of a global regex with a Hugging Face split behaviour, appending
 * the non-empty pieces to `out` (an array, or a function called with each piece).
 *
 * @example
 * ```ts
 * import { splitByRegex } from "./pretokenize.ts";
 * const out: string[] = [];
 * splitByRegex("a1b22", /\d+/gu, "MergedWithPrevious", false, out);
 * console.log(out); // ["a1", "b22"]
 * ```
 */
export function splitByRegex(
  text: string,
  re: RegExp,
  behavior: SplitBehavior,
  invert: boolean,
  out: string[] | Emit,
): void {
  if (Array.isArray(out)) {
    splitEach(text, re, behavior, invert, (p) => void out.push(p));
    return;
  }
  splitEach(text, re, behavior, invert, out);
}

function splitEach(
  text: string,
  re: RegExp,
  behavior: SplitBehavior,
  invert: boolean,
  emit: Emit,
): void {
  if (behavior === "Isolated") {
    // Hot path: every gap and match is a piece, in order.
    let prev = 0;
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const start = m.index;
      const len = m[0].length;
      if (len === 0) {
        re.lastIndex = start + (text.codePointAt(start)! > 0xffff ? 2 : 1);
        if (start >= text.length) break;
        continue;
      }
      if (prev !== start) emit(text.slice(prev, start));
      emit(m[0]);
      prev = start + len;
    }
    if (prev !== text.length) emit(text.slice(prev));
    return;
  }
  for (const [a, b] of combine(spans(text, re, invert), behavior)) {
    if (b > a) emit(text.slice(a, b));
  }
}

/**
 * A compiled pre-tokenizer: pieces of a text, and whether the pipeline is byte-level.
 *
 * @example Split text into pieces before BPE
 * ```ts ignore
 * import * as mg from "@moongrad/moongrad";
 * const pre: mg.tokenizer.PreTokenizer = mg.tokenizer.buildPreTokenizer({ type: "Whitespace" });
 * const pieces: string[] = [];
 * pre.split("hello world", (p) => pieces.push(p));
 * console.log(pieces, pre.byteLevel); // ["hello", "world"] false
 * ```
 */
export interface PreTokenizer {
  /** Calls `emit` with each piece of `text`, in order. */
  split(text: string, emit: (piece: string) => void): void;
  /** Whether a ByteLevel step is present (the vocabulary is over bytes). */
  readonly byteLevel: boolean;
}

function escapeLiteral(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
}

type Step = (piece: string, emit: Emit) => void;

function buildStep(c: HfComponent, where: string, flags: { byteLevel: boolean }): Step {
  switch (c.type) {
    case "Sequence": {
      const list = c.pretokenizers;
      if (!Array.isArray(list)) throw new Error(`${where}: Sequence needs "pretokenizers"`);
      const steps = list.map((x, i) => buildStep(x as HfComponent, `${where}[${i}]`, flags));
      // Compose right to left: each step emits into the next one, no arrays in between.
      return steps.reduceRight<Step>(
        (next, step) => (piece, emit) => step(piece, (p) => next(p, emit)),
        (piece, emit) => emit(piece),
      );
    }
    case "Split": {
      const pat = c.pattern as { Regex?: string; String?: string } | undefined;
      const behavior = c.behavior as SplitBehavior;
      if (!BEHAVIORS.includes(behavior)) {
        throw new Error(`${where}: Split behavior ${JSON.stringify(c.behavior)} is unknown`);
      }
      let re: RegExp;
      if (typeof pat?.Regex === "string") re = compileSplitPattern(pat.Regex);
      else if (typeof pat?.String === "string") {
        re = new RegExp(escapeLiteral(pat.String), "gu");
      } else throw new Error(`${where}: Split needs pattern {"Regex": ...} or {"String": ...}`);
      const invert = c.invert === true;
      return (piece, emit) => splitEach(piece, re, behavior, invert, emit);
    }
    case "ByteLevel": {
      flags.byteLevel = true;
      const prefix = c.add_prefix_space === true;
      const re = c.use_regex === false ? null : compileSplitPattern(GPT2_PATTERN);
      return (piece, emit) => {
        const p = prefix && !piece.startsWith(" ") ? " " + piece : piece;
        if (re) splitEach(p, re, "Isolated", false, emit);
        else emit(p);
      };
    }
    case "Digits": {
      const re = c.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return (piece, emit) => splitEach(piece, re, "Isolated", false, emit);
    }
    default:
      throw new Error(
        `${where}: pre-tokenizer type ${
          JSON.stringify(c.type)
        } is not supported (supported: Sequence, Split, ByteLevel, Digits)`,
      );
  }
}

/**
 * Builds a pre-tokenizer from the `pre_tokenizer` JSON of a `tokenizer.json` (null: the
 * whole text is one piece). Throws on types it does not implement.
 *
 * @example
 * ```ts
 * import { buildPreTokenizer } from "./pretokenize.ts";
 * const pt = buildPreTokenizer({ type: "ByteLevel", add_prefix_space: true, use_regex: true });
 * const out: string[] = [];
 * pt.split("Hello world", (p) => out.push(p));
 * console.log(out, pt.byteLevel); // [" Hello", " world"] true
 * ```
 */
export function buildPreTokenizer(config: HfComponent | null): PreTokenizer {
  const flags = { byteLevel: false };
  const step: Step = config === null
    ? (p, emit) => emit(p)
    : buildStep(config, "pre_tokenizer", flags);
  return { split: step, byteLevel: flags.byteLevel };
}

/**
 * The pre-tokenizer JSON of tokenizers this library writes: a regex Split (Isolated) followed
 * by ByteLevel without its own regex or prefix space.
 *
 * @example
 * ```ts
 * import { splitThenByteLevel } from "./pretokenize.ts";
 * import { KIMI_K2_PATTERN } from "./patterns.ts";
 * console.log(splitThenByteLevel(KIMI_K2_PATTERN).type); // "Sequence"
 * ```
 */
export function splitThenByteLevel(pattern: string): HfComponent {
  return {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
}

const FORMS = new Set(["NFC", "NFD", "NFKC", "NFKD"]);

/**
 * Builds a normalizer from the `normalizer` JSON (null, a Unicode normal form, or a Sequence
 * of them). Throws on types it does not implement.
 *
 * @example
 * ```ts
 * import { buildNormalizer } from "./pretokenize.ts";
 * const nfc = buildNormalizer({ type: "NFC" })!;
 * console.log(nfc("e\u0301") === "\u00e9"); // true
 * ```
 */
export function buildNormalizer(config: HfComponent | null): ((s: string) => string) | null {
  if (config === null) return null;
  if (FORMS.has(config.type)) {
    const form = config.type;
    return (s) => s.normalize(form);
  }
  if (config.type === "Sequence" && Array.isArray(config.normalizers)) {
    const fns = (config.normalizers as HfComponent[]).map((n) => buildNormalizer(n));
    return (s) => fns.reduce((acc, f) => (f ? f(acc) : acc), s);
  }
  throw new Error(
    `normalizer type ${
      JSON.stringify(config.type)
    } is not supported (supported: null, NFC, NFD, NFKC, NFKD, Sequence)`,
  );
}
