/**
 * Byte-pair merging of one pre-tokenised word by priority.
 *
 * A `MergeTable` maps an adjacent pair of token ids (left, right) to the merge that joins
 * them: its rank (lower merges first) and the id of the joined token. Hugging Face BPE ranks a
 * merge by its line in `merges`; tiktoken ranks the pair by the rank of the joined token, and
 * any split of a token into two tokens is a pair (tiktoken.ts builds that table).
 *
 * Merging repeats: join the adjacent pair with the lowest rank, the leftmost of equals, until
 * no adjacent pair has a merge. Short words (the common case) rescan the pairs each round,
 * O(n²); longer ones use a doubly linked list of symbols and a binary min-heap of
 * (rank, position) candidates with lazy deletion (an entry is skipped when its position is
 * dead or its pair's rank changed), O(n log n), so a megabyte-long word stays fast.
 */

/** Pair keys are left · 2^24 + right, so ids must stay below 2^24. */
const KEY = 0x1000000;
/** Heap entries are rank · 2^26 + position. */
const POS = 0x4000000;

/**
 * Merges of a BPE vocabulary, looked up by adjacent pair.
 *
 * @example
 * ```ts
 * import { MergeTable, mergeWord } from "./bpe.ts";
 * // ids: a=0 b=1 c=2; merges by rank: (a, b) -> ab=3, (ab, c) -> abc=4
 * const t = new MergeTable();
 * t.add(0, 1, 0, 3);
 * t.add(3, 2, 1, 4);
 * console.log(mergeWord([0, 1, 2, 0], t)); // [4, 0]
 * ```
 */
export class MergeTable {
  readonly #map = new Map<number, number>();

  /** Number of merges. */
  get size(): number {
    return this.#map.size;
  }

  /**
   * Adds the merge of `left` and `right` into `result` with priority `rank` (lower first).
   * An existing merge of the same pair is kept if its rank is lower.
   */
  add(left: number, right: number, rank: number, result: number): void {
    if (left >= KEY || right >= KEY || result >= KEY || left < 0 || right < 0 || result < 0) {
      throw new RangeError(`merge (${left}, ${right}) -> ${result}: ids must be in [0, 2^24)`);
    }
    if (!(rank >= 0 && rank < 2 ** 27)) throw new RangeError(`merge rank ${rank} not in [0, 2^27)`);
    const key = left * KEY + right;
    const packed = rank * KEY + result;
    const old = this.#map.get(key);
    if (old === undefined || packed < old) this.#map.set(key, packed);
  }

  /** The packed merge (rank · 2^24 + result) of a pair, or undefined. */
  get(left: number, right: number): number | undefined {
    return this.#map.get(left * KEY + right);
  }

  /** Every merge as [left, right, rank, result], in the table's insertion order. */
  *entries(): IterableIterator<[number, number, number, number]> {
    for (const [k, v] of this.#map) {
      yield [Math.floor(k / KEY), k % KEY, Math.floor(v / KEY), v % KEY];
    }
  }
}

/** Rescans all pairs each round: fastest for short words. */
function mergeByScan(parts: number[], table: MergeTable): number[] {
  let n = parts.length;
  while (n > 1) {
    let best = Infinity;
    let at = -1;
    let result = 0;
    for (let i = 0; i + 1 < n; i++) {
      const v = table.get(parts[i], parts[i + 1]);
      if (v === undefined) continue;
      const rank = Math.floor(v / KEY);
      if (rank < best) {
        best = rank;
        at = i;
        result = v % KEY;
      }
    }
    if (at < 0) break;
    parts[at] = result;
    parts.splice(at + 1, 1);
    n--;
  }
  return parts;
}

/** Linked list + lazy min-heap: O(n log n) for long words. */
function mergeByHeap(parts: number[], table: MergeTable): number[] {
  const n = parts.length;
  if (n >= POS) throw new RangeError(`a pre-token of ${n} symbols is too long (limit 2^26)`);
  const id = Int32Array.from(parts);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const heap: number[] = [];
  const push = (x: number) => {
    let i = heap.length;
    heap.push(x);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p] <= x) break;
      heap[i] = heap[p];
      i = p;
    }
    heap[i] = x;
  };
  const pop = (): number => {
    const top = heap[0];
    const last = heap.pop()!;
    const m = heap.length;
    if (m > 0) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= last) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = last;
    }
    return top;
  };
  const candidate = (pos: number) => {
    const j = next[pos];
    if (j < 0) return;
    const v = table.get(id[pos], id[j]);
    if (v !== undefined) push(Math.floor(v / KEY) * POS + pos);
  };
  for (let i = 0; i + 1 < n; i++) candidate(i);
  while (heap.length > 0) {
    const e = pop();
    const rank = Math.floor(e / POS);
    const pos = e % POS;
    if (id[pos] < 0) continue;
    const j = next[pos];
    if (j < 0) continue;
    const v = table.get(id[pos], id[j]);
    if (v === undefined || Math.floor(v / KEY) !== rank) continue;
    id[pos] = v % KEY;
    id[j] = -1;
    next[pos] = next[j];
    if (next[j] >= 0) prev[next[j]] = pos;
    if (prev[pos] >= 0) candidate(prev[pos]);
    candidate(pos);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i]) out.push(id[i]);
  return out;
}

/** Words longer than this use the heap. */
const SCAN_LIMIT = 48;

/**
 * Applies the merges of `table` to the symbol ids of one word (modifies and returns `parts`
 * for short words, a new array for long ones). `strategy` forces one algorithm (tests).
 *
 * @example
 * ```ts
 * import { MergeTable, mergeWord } from "./bpe.ts";
 * const t = new MergeTable();
 * t.add(0, 0, 0, 1); // (a, a) -> aa
 * console.log(mergeWord([0, 0, 0], t)); // [1, 0]: the leftmost pair of equal rank first
 * ```
 */
export function mergeWord(
  parts: number[],
  table: MergeTable,
  strategy: "auto" | "scan" | "heap" = "auto",
): number[] {
  if (parts.length < 2) return parts;
  const heap = strategy === "heap" || (strategy === "auto" && parts.length > SCAN_LIMIT);
  return heap ? mergeByHeap(parts, table) : mergeByScan(parts, table);
}
