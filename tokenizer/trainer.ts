/**
 * Byte-level BPE training (Sennrich et al. 2016, over bytes as in GPT-2).
 *
 * 1. Pre-tokenise the corpus with the split pattern and count each distinct word.
 * 2. Start from the 256 byte tokens (id = byte value); every word is its UTF-8 bytes.
 * 3. Count every adjacent pair over the distinct words, weighted by word count, and remember
 *    which words hold each pair.
 * 4. Repeat until the vocabulary is full or no pair occurs `minFrequency` times: take the most
 *    frequent pair (ties: the smaller (left, right) ids, so training is deterministic), add the
 *    joined token, and rewrite only the words that hold the pair, updating the pair counts by
 *    the difference (the pairs around each replaced occurrence lose a count, the pairs with the
 *    new token gain one).
 *
 * The best pair comes from a max-heap with lazy updates: a merge only lowers the counts of
 * existing pairs (every pair it creates contains the new token), so a popped entry whose count
 * is stale is pushed back with its current count, and new pairs are pushed once per merge.
 * Work per merge is proportional to the words that hold the pair, not to the corpus.
 */
import { compileSplitPattern } from "./regex.ts";

/** Pair keys are left · 2^24 + right. */
const KEY = 0x1000000;

/**
 * Counts the pre-tokenised words of texts (the split pattern's matches and the gaps between
 * them), adding to `counts` if given.
 *
 * @example
 * ```ts
 * import { countWords } from "./trainer.ts";
 * import { GPT2_PATTERN } from "./patterns.ts";
 * console.log(countWords(["the cat the hat"], GPT2_PATTERN));
 * // Map { "the" => 1, " cat" => 1, " the" => 1, " hat" => 1 }
 * ```
 */
export function countWords(
  texts: Iterable<string>,
  pattern: string,
  counts: Map<string, number> = new Map(),
): Map<string, number> {
  const re = compileSplitPattern(pattern);
  const add = (w: string) => counts.set(w, (counts.get(w) ?? 0) + 1);
  for (const text of texts) {
    let prev = 0;
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      if (m[0].length === 0) {
        re.lastIndex = m.index + 1;
        continue;
      }
      if (prev !== m.index) add(text.slice(prev, m.index));
      add(m[0]);
      prev = m.index + m[0].length;
    }
    if (prev < text.length) add(text.slice(prev));
  }
  return counts;
}

/** A max-heap of (count, pair key): highest count first, then the smaller key. */
class PairHeap {
  readonly #c: number[] = [];
  readonly #k: number[] = [];

  get size(): number {
    return this.#c.length;
  }

  #above(i: number, j: number): boolean {
    return this.#c[i] > this.#c[j] || (this.#c[i] === this.#c[j] && this.#k[i] < this.#k[j]);
  }

  #swap(i: number, j: number): void {
    [this.#c[i], this.#c[j]] = [this.#c[j], this.#c[i]];
    [this.#k[i], this.#k[j]] = [this.#k[j], this.#k[i]];
  }

  push(count: number, key: number): void {
    this.#c.push(count);
    this.#k.push(key);
    for (let i = this.#c.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!this.#above(i, p)) break;
      this.#swap(i, p);
      i = p;
    }
  }

  pop(): [number, number] {
    const top: [number, number] = [this.#c[0], this.#k[0]];
    const n = this.#c.length - 1;
    this.#swap(0, n);
    this.#c.pop();
    this.#k.pop();
    for (let i = 0;;) {
      let b = i;
      const l = 2 * i + 1, r = l + 1;
      if (l < n && this.#above(l, b)) b = l;
      if (r < n && this.#above(r, b)) b = r;
      if (b === i) break;
      this.#swap(i, b);
      i = b;
    }
    return top;
  }
}

/**
 * The learned vocabulary: token bytes by id (ids 0..255 are the bytes) and the merges in the
 * order learned (merge i created token 256 + i).
 *
 * @example
 * ```ts
 * import { trainBpe, type TrainedBpe } from "./trainer.ts";
 * const t: TrainedBpe = trainBpe(new Map([["aaaa", 3]]), { merges: 2 });
 * console.log(t.merges); // [[97, 97], [256, 256]]
 * ```
 */
export interface TrainedBpe {
  /** Token bytes by id. */
  tokens: Uint8Array[];
  /** Merged pairs [left, right] in learning order. */
  merges: [number, number][];
}

/**
 * Options of `trainBpe`.
 *
 * @example
 * ```ts
 * import type { TrainBpeOptions } from "./trainer.ts";
 * const o: TrainBpeOptions = { merges: 3840, minFrequency: 2 };
 * console.log(o.merges);
 * ```
 */
export interface TrainBpeOptions {
  /** How many merges to learn at most. */
  merges: number;
  /** Stop when the best pair occurs fewer times than this (default 2). */
  minFrequency?: number;
}

/**
 * Learns byte-level BPE merges from word counts (see the module doc for the algorithm).
 *
 * @example
 * ```ts
 * import { countWords, trainBpe } from "./trainer.ts";
 * import { KIMI_K2_PATTERN } from "./patterns.ts";
 * const words = countWords(["low lower lowest low low"], KIMI_K2_PATTERN);
 * const { merges, tokens } = trainBpe(words, { merges: 4 });
 * console.log(merges.length, new TextDecoder().decode(tokens[tokens.length - 1]));
 * ```
 */
export function trainBpe(words: Map<string, number>, options: TrainBpeOptions): TrainedBpe {
  const minFrequency = options.minFrequency ?? 2;
  const enc = new TextEncoder();
  // All words' symbols in one array: word w is sym[start[w] .. start[w] + len[w]).
  const encoded: Uint8Array[] = [];
  const counts: number[] = [];
  let total = 0;
  for (const [w, c] of words) {
    const b = enc.encode(w);
    if (b.length === 0) continue;
    encoded.push(b);
    counts.push(c);
    total += b.length;
  }
  const nWords = encoded.length;
  const sym = new Int32Array(total);
  const start = new Int32Array(nWords);
  const len = new Int32Array(nWords);
  let at = 0;
  for (let w = 0; w < nWords; w++) {
    start[w] = at;
    len[w] = encoded[w].length;
    sym.set(encoded[w], at);
    at += encoded[w].length;
  }

  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const note = (key: number, w: number) => {
    const list = where.get(key);
    if (list === undefined) where.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  };
  for (let w = 0; w < nWords; w++) {
    const s = start[w];
    for (let i = s; i + 1 < s + len[w]; i++) {
      const key = sym[i] * KEY + sym[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + counts[w]);
      note(key, w);
    }
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  const tokens: Uint8Array[] = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
  const merges: [number, number][] = [];
  const seen = new Int32Array(nWords).fill(-1);
  const created = new Set<number>();
  const inc = (key: number, c: number, w: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + c);
    created.add(key);
    note(key, w);
  };
  const dec = (key: number, c: number) => {
    const v = pairCount.get(key)! - c;
    if (v > 0) pairCount.set(key, v);
    else pairCount.delete(key);
  };

  while (merges.length < options.merges) {
    let key = -1;
    let count = 0;
    while (heap.size > 0) {
      const [c, k] = heap.pop();
      const actual = pairCount.get(k) ?? 0;
      if (actual === c) {
        key = k;
        count = c;
        break;
      }
      if (actual > 0) heap.push(actual, k);
    }
    if (key < 0 || count < minFrequency) break;
    const a = Math.floor(key / KEY), b = key % KEY;
    const t = tokens.length;
    const joined = new Uint8Array(tokens[a].length + tokens[b].length);
    joined.set(tokens[a]);
    joined.set(tokens[b], tokens[a].length);
    tokens.push(joined);
    merges.push([a, b]);
    const stamp = merges.length;
    created.clear();
    for (const w of where.get(key) ?? []) {
      if (seen[w] === stamp) continue;
      seen[w] = stamp;
      const s = start[w], n = len[w], c = counts[w];
      let out = s;
      for (let i = s; i < s + n;) {
        if (i + 1 < s + n && sym[i] === a && sym[i + 1] === b) {
          if (out > s) {
            const left = sym[out - 1];
            dec(left * KEY + a, c);
            inc(left * KEY + t, c, w);
          }
          if (i + 2 < s + n) {
            const right = sym[i + 2];
            dec(b * KEY + right, c);
            inc(t * KEY + right, c, w);
          }
          dec(key, c);
          sym[out++] = t;
          i += 2;
        } else sym[out++] = sym[i++];
      }
      len[w] = out - s;
    }
    where.delete(key);
    for (const k of created) {
      const c = pairCount.get(k);
      if (c !== undefined) heap.push(c, k);
    }
  }
  return { tokens, merges };
}
