/**
 * UTF-8 validity scanning for byte input: `validUtf8Length` returns how many bytes from an
 * offset form a run of well-formed UTF-8 (shortest-form sequences, no surrogates, at most
 * U+10FFFF, as TextDecoder's fatal mode checks). Byte input is encoded as text run by run,
 * and every byte outside a valid run becomes its own byte token, so no input is lost.
 */

/** Length (1..4) of the valid sequence starting at `i`, or 0 when the byte there is invalid. */
function sequenceLength(b: Uint8Array, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  let n: number, min: number;
  if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
  else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
  else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
  else return 0;
  if (i + n >= b.length) return 0;
  let cp = c & (0x3f >> n);
  for (let k = 1; k <= n; k++) {
    const d = b[i + k];
    if ((d & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (d & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n + 1;
}

/**
 * The number of bytes from `start` that form well-formed UTF-8 (stops before the first byte
 * that does not begin a complete, valid sequence).
 *
 * @example
 * ```ts
 * import { validUtf8Length } from "./utf8.ts";
 * const b = Uint8Array.of(0x68, 0xc3, 0xa9, 0xff, 0x69); // "hé", 0xff, "i"
 * console.log(validUtf8Length(b, 0), validUtf8Length(b, 3), validUtf8Length(b, 4)); // 3 0 1
 * ```
 */
export function validUtf8Length(bytes: Uint8Array, start: number): number {
  let i = start;
  while (i < bytes.length) {
    if (bytes[i] < 0x80) {
      i++;
      continue;
    }
    const n = sequenceLength(bytes, i);
    if (n === 0) break;
    i += n;
  }
  return i - start;
}
