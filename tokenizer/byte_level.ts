/**
 * GPT-2's byte-level alphabet (`bytes_to_unicode`): every byte 0..255 is shown as one printable
 * Unicode character, so a token's bytes can be written as a JSON string without escapes or
 * whitespace. The 188 printable bytes `!`..`~`, `¡`..`¬`, `®`..`ÿ` stand for themselves; the
 * other 68 bytes (controls, space, DEL, NBSP, soft hyphen, ...) are mapped in byte order to
 * U+0100, U+0101, ... (so space 0x20 is `Ġ` U+0120 and newline 0x0A is `Ċ` U+010A).
 * Hugging Face `ByteLevel` pre-tokenizers and decoders and tiktoken-converted vocabularies use
 * this mapping for the token strings of `tokenizer.json`.
 */

function buildTable(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCharCode(printable(b) ? b : 256 + next++);
  }
  return table;
}

/**
 * The byte-level character of each byte (index = byte).
 *
 * @example
 * ```ts
 * import { BYTE_TO_CHAR } from "./byte_level.ts";
 * console.log(BYTE_TO_CHAR[0x20], BYTE_TO_CHAR[0x41]); // "Ġ" "A"
 * ```
 */
export const BYTE_TO_CHAR: readonly string[] = buildTable();

/** Char code → byte (-1 for characters outside the alphabet); the alphabet ends at U+0143. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x144).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => (t[c.charCodeAt(0)] = b));
  return t;
})();

/**
 * Writes bytes as a byte-level string (one character per byte).
 *
 * @example
 * ```ts
 * import { bytesToByteLevel } from "./byte_level.ts";
 * console.log(bytesToByteLevel(new TextEncoder().encode(" hi\n"))); // "ĠhiĊ"
 * ```
 */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}

/**
 * Reads a byte-level string back into bytes, or returns null when a character is not in the
 * alphabet (such a string is not a byte-level token, e.g. a special token's text).
 *
 * @example
 * ```ts
 * import { byteLevelToBytes } from "./byte_level.ts";
 * console.log(byteLevelToBytes("Ġhi")); // Uint8Array [32, 104, 105]
 * console.log(byteLevelToBytes("<｜x｜>")); // null
 * ```
 */
export function byteLevelToBytes(s: string): Uint8Array | null {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}
