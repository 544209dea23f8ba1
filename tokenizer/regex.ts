/**
 * Translates a split pattern from the reference dialect (Oniguruma / Rust regex, as found in
 * `tokenizer.json` and tiktoken sources) into a JavaScript RegExp with the same matches.
 *
 * One pass over the pattern, tracking escapes and character-class nesting:
 * - `\p{Han}`-style script names become `\p{Script=Han}` (JavaScript needs the prefix);
 *   general categories and binary properties pass through;
 * - `\s` / `\S` become `\p{White_Space}` / `\P{White_Space}`, the reference engines' meaning
 *   (JavaScript's `\s` adds U+FEFF and lacks U+0085);
 * - a class with an intersection, `[\p{Lu}\p{M}&&[^\p{Han}]]`, gets each operand bracketed,
 *   `[[\p{Lu}\p{M}]&&[^\p{Script=Han}]]`, and the pattern compiles with the `v` flag, where
 *   literal class characters that `v` reserves are escaped;
 * - `\x{HHHH}` becomes `\u{HHHH}`;
 * - inline modifiers `(?i:...)` and lookarounds are native JavaScript.
 * Possessive quantifiers (`x++`) have no JavaScript form and are rejected with an error.
 */

/** Whether `\p{name}` is valid in a JavaScript `u` regex. */
function isJsProperty(name: string): boolean {
  try {
    new RegExp(`\\p{${name}}`, "u");
    return true;
  } catch {
    return false;
  }
}

function property(neg: boolean, name: string, source: string): string {
  const p = neg ? "P" : "p";
  if (isJsProperty(name)) return `\\${p}{${name}}`;
  if (isJsProperty(`Script=${name}`)) return `\\${p}{Script=${name}}`;
  throw new Error(`split pattern ${JSON.stringify(source)}: unknown property \\${p}{${name}}`);
}

/** Characters a `v`-mode class reserves (must be escaped when literal). */
const V_RESERVED = new Set(["(", ")", "{", "}", "/", "|"]);
/** Characters that a `v`-mode class rejects when doubled (`!!`, `##`, ...). */
const V_DOUBLE = new Set("&!#$%*+,.:;<=>?@^`~".split(""));

interface ClassScan {
  /** The translated class including brackets. */
  text: string;
  /** Index just past the closing bracket. */
  end: number;
  /** Whether it (or a nested class) uses `&&`. */
  intersects: boolean;
}

/** Scans the class starting at `src[start] === "["`; `v` escapes for `v`-mode output. */
function scanClass(src: string, start: number, v: boolean): ClassScan {
  let i = start + 1;
  let head = "[";
  if (src[i] === "^") {
    head += "^";
    i++;
  }
  const operands: string[] = [];
  let cur = "";
  let intersects = false;
  let first = true;
  while (i < src.length && (src[i] !== "]" || first)) {
    const c = src[i];
    if (c === "\\") {
      const n = src[i + 1];
      if ((n === "p" || n === "P") && src[i + 2] === "{") {
        const close = src.indexOf("}", i + 3);
        cur += property(n === "P", src.slice(i + 3, close), src);
        i = close + 1;
      } else if (n === "s" || n === "S") {
        cur += n === "s" ? "\\p{White_Space}" : "\\P{White_Space}";
        i += 2;
      } else if (n === "x" && src[i + 2] === "{") {
        const close = src.indexOf("}", i + 3);
        cur += `\\u{${src.slice(i + 3, close)}}`;
        i = close + 1;
      } else {
        cur += c + n;
        i += 2;
      }
    } else if (c === "[") {
      const inner = scanClass(src, i, v);
      intersects ||= inner.intersects;
      cur += inner.text;
      i = inner.end;
    } else if (c === "&" && src[i + 1] === "&") {
      operands.push(cur);
      cur = "";
      intersects = true;
      i += 2;
    } else {
      let lit = c === "]" ? "\\]" : c;
      if (v) {
        const lone = c === "-" && (cur === "" || src[i + 1] === "]");
        if (V_RESERVED.has(c) || lone || (V_DOUBLE.has(c) && src[i + 1] === c)) lit = "\\" + c;
      }
      cur += lit;
      i++;
    }
    first = false;
  }
  if (i >= src.length) throw new Error(`split pattern ${JSON.stringify(src)}: unclosed [`);
  operands.push(cur);
  const wrap = (o: string) => (/^\[[^]*\]$/.test(o) && balancedClass(o) ? o : `[${o}]`);
  const body = operands.length > 1 ? operands.map(wrap).join("&&") : operands[0];
  return { text: `${head}${body}]`, end: i + 1, intersects };
}

/** Whether `s` (starting with `[`) is one class whose closing bracket is its last character. */
function balancedClass(s: string): boolean {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === "[") depth++;
    else if (s[i] === "]" && --depth === 0) return i === s.length - 1;
  }
  return false;
}

function translate(src: string, v: boolean): { text: string; intersects: boolean } {
  let out = "";
  let intersects = false;
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === "\\") {
      const n = src[i + 1];
      if ((n === "p" || n === "P") && src[i + 2] === "{") {
        const close = src.indexOf("}", i + 3);
        out += property(n === "P", src.slice(i + 3, close), src);
        i = close + 1;
      } else if (n === "s" || n === "S") {
        out += n === "s" ? "\\p{White_Space}" : "\\P{White_Space}";
        i += 2;
      } else if (n === "x" && src[i + 2] === "{") {
        const close = src.indexOf("}", i + 3);
        out += `\\u{${src.slice(i + 3, close)}}`;
        i = close + 1;
      } else {
        out += c + n;
        i += 2;
      }
    } else if (c === "[") {
      const cls = scanClass(src, i, v);
      intersects ||= cls.intersects;
      out += cls.text;
      i = cls.end;
    } else {
      if ("*+?}".includes(c) && src[i + 1] === "+") {
        throw new Error(
          `split pattern ${
            JSON.stringify(src)
          }: possessive quantifier "${c}+" at ${i} has no JavaScript equivalent; ` +
            "use the greedy form",
        );
      }
      out += c;
      i++;
    }
  }
  return { text: out, intersects };
}

/**
 * Compiles a split pattern (Oniguruma / Rust regex dialect) into a global JavaScript RegExp.
 * Throws an Error naming the pattern when it uses something JavaScript cannot express.
 *
 * @example
 * ```ts
 * import { compileSplitPattern } from "./regex.ts";
 * const re = compileSplitPattern("[\\p{Han}]+|[\\p{L}&&[^\\p{Han}]]+|\\s+");
 * console.log("abc中文 de".match(re)); // ["abc", "中文", " ", "de"]
 * ```
 */
export function compileSplitPattern(pattern: string): RegExp {
  const plain = translate(pattern, false);
  const v = plain.intersects;
  const text = v ? translate(pattern, true).text : plain.text;
  try {
    return new RegExp(text, v ? "gv" : "gu");
  } catch (e) {
    throw new Error(
      `split pattern ${JSON.stringify(pattern)} is not a valid JavaScript regex (as ${
        JSON.stringify(text)
      }): ${(e as Error).message}`,
    );
  }
}
