/**
 * tiktoken rank files (`tiktoken.model`, `*.tiktoken`; the format of Kimi K2's tokenizer):
 * one `base64(token bytes) rank` per line, the rank being the token id and the merge
 * priority. tiktoken encodes a word by repeatedly joining the adjacent pair of parts whose
 * concatenation has the lowest rank. As a pair table: every way of splitting a token into two
 * tokens is a mergeable pair whose priority is the token's rank; parts are always tokens, so
 * merging over that table is exactly tiktoken's rule.
 */
import { bytesToByteLevel } from "./byte_level.ts";

/**
 * A parsed rank file: token strings by id (byte-level text), and every mergeable pair with its
 * rank, sorted by (rank, left id).
 *
 * @example
 * ```ts
 * import { parseTiktokenRanks, type TiktokenRanks } from "./tiktoken.ts";
 * const r: TiktokenRanks = parseTiktokenRanks("YQ== 0\nYg== 1\nYWI= 2\n");
 * console.log(r.vocab, r.merges, r.mergeRanks); // ["a", "b", "ab"] [[0, 1]] [2]
 * ```
 */
export interface TiktokenRanks {
  /** Token strings by id (byte-level text). */
  vocab: (string | undefined)[];
  /** Mergeable pairs [left, right], sorted by priority. */
  merges: [number, number][];
  /** The rank (priority) of each pair: the rank of the joined token. */
  mergeRanks: number[];
}

/**
 * Parses a tiktoken rank file; throws an Error naming the line of the first malformed entry.
 *
 * @example
 * ```ts
 * import { parseTiktokenRanks } from "./tiktoken.ts";
 * // "a", "b", "c", "ab", "abc"
 * const r = parseTiktokenRanks("YQ== 0\nYg== 1\nYw== 2\nYWI= 3\nYWJj 4\n");
 * console.log(r.merges); // [[0, 1], [3, 2]]
 * ```
 */
export function parseTiktokenRanks(text: string): TiktokenRanks {
  const byBinary = new Map<string, number>();
  const binaries: string[] = [];
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === "") continue;
    const sp = line.indexOf(" ");
    const rank = Number(line.slice(sp + 1));
    if (sp <= 0 || !Number.isInteger(rank) || rank < 0 || rank >= 2 ** 24) {
      throw new Error(`tiktoken ranks, line ${n + 1}: expected "base64 rank", got ${line}`);
    }
    let bin: string;
    try {
      bin = atob(line.slice(0, sp));
    } catch {
      throw new Error(`tiktoken ranks, line ${n + 1}: ${line.slice(0, sp)} is not base64`);
    }
    if (binaries[rank] !== undefined) {
      throw new Error(`tiktoken ranks, line ${n + 1}: rank ${rank} appears twice`);
    }
    binaries[rank] = bin;
    byBinary.set(bin, rank);
  }
  const vocab: (string | undefined)[] = new Array(binaries.length);
  const pairs: [number, number, number][] = [];
  for (let id = 0; id < binaries.length; id++) {
    const bin = binaries[id];
    if (bin === undefined) continue;
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    vocab[id] = bytesToByteLevel(bytes);
    for (let k = 1; k < bin.length; k++) {
      const l = byBinary.get(bin.slice(0, k));
      if (l === undefined) continue;
      const r = byBinary.get(bin.slice(k));
      if (r !== undefined) pairs.push([l, r, id]);
    }
  }
  pairs.sort((x, y) => x[2] - y[2] || x[0] - y[0]);
  return {
    vocab,
    merges: pairs.map(([l, r]) => [l, r]),
    mergeRanks: pairs.map((p) => p[2]),
  };
}
