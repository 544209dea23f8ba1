/**
 * The GPU counting sort (ops/bucket_sort.ts) against a host reference: counts, exclusive
 * offsets, a stable permutation and its inverse, for bucket counts on both histogram paths
 * (workgroup-memory counts up to 1024 buckets, global atomics above), key counts around the
 * 256-key block size, out-of-range keys (left out of every bucket) and a strided key view.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { bucketSort } from "../ops/bucket_sort.ts";
import { gpu } from "./util.ts";

/** Host reference: the stable order of the in-range keys by bucket. */
function reference(keys: number[], e: number) {
  const counts = new Array(e).fill(0);
  for (const k of keys) if (k >= 0 && k < e) counts[k]++;
  const offsets = [0];
  for (const c of counts) offsets.push(offsets[offsets.length - 1] + c);
  const perm: number[] = [];
  for (let b = 0; b < e; b++) keys.forEach((k, i) => k === b && perm.push(i));
  return { counts, offsets, perm };
}

Deno.test("bucketSort = the stable host sort on both histogram paths, across block boundaries", async () => {
  await gpu();
  const rng = new mg.Rng(11);
  for (const e of [1, 8, 300, 1024, 1025, 3000]) {
    for (const n of [1, 255, 256, 257, 700]) {
      // Keys in −2..e+1: a few fall outside the buckets.
      const keys = Array.from({ length: n }, () => Math.floor(rng.next() * (e + 4)) - 2);
      const t = mg.tensor(keys, { dtype: "i32" });
      const s = bucketSort(t, e);
      const ref = reference(keys, e);
      const what = `e ${e}, n ${n}`;
      assert.deepEqual(Array.from(await s.counts.data()), ref.counts, `${what} counts`);
      assert.deepEqual(Array.from(await s.offsets.data()), ref.offsets, `${what} offsets`);
      const placed = ref.offsets[e];
      const perm = Array.from(await s.perm.data()).slice(0, placed);
      assert.deepEqual(perm, ref.perm, `${what} perm`);
      const inv = await s.inv.data();
      perm.forEach((p, pos) => assert.equal(inv[p], pos, `${what} inv`));
      for (const x of [t, s.counts, s.offsets, s.perm, s.inv]) x.dispose();
    }
  }
});

Deno.test("bucketSort reads a key view at an offset", async () => {
  await gpu();
  const all = mg.tensor([9, 9, 3, 1, 3, 0, 2, 1], { dtype: "i32" });
  const s = bucketSort(all.slice(0, 2, 8), 4);
  assert.deepEqual(Array.from(await s.counts.data()), [1, 2, 1, 2]);
  assert.deepEqual(Array.from(await s.perm.data()), [3, 1, 5, 4, 0, 2]);
  for (const x of [all, s.counts, s.offsets, s.perm, s.inv]) x.dispose();
});

Deno.test("indexAdd: the one-dispatch masked rows and the sorted path both = the host sum in index order, bit for bit", async () => {
  await gpu();
  const rng = new mg.Rng(5);
  // Small (one dispatch: a workgroup per row, its index entries marked in a bit mask) and
  // large (outputs × index length over 2^26: sorted); negative indices (counted from the end),
  // a base tensor, an outer axis, rows longer than the row workgroup (130 > 64) and an index
  // of several mask words that is not a multiple of 32.
  for (
    const [outer, rows, n, cols] of [[1, 7, 50, 3], [2, 5, 300, 130], [3, 40, 33, 1], [
      1,
      1100,
      20000,
      4,
    ]]
  ) {
    const base = Array.from({ length: outer * rows * cols }, () => rng.next() * 2 - 1);
    const idx = Array.from({ length: n }, () => Math.floor(rng.next() * 2 * rows) - rows);
    const src = Array.from({ length: outer * n * cols }, () => rng.next() * 2 - 1);
    const want = Float32Array.from(base);
    for (let o = 0; o < outer; o++) {
      idx.forEach((v, r) => {
        const w = v < 0 ? v + rows : v;
        if (w < 0 || w >= rows) return;
        for (let c = 0; c < cols; c++) {
          const at = (o * rows + w) * cols + c;
          want[at] = Math.fround(want[at] + Math.fround(src[(o * n + r) * cols + c]));
        }
      });
    }
    const out = mg.indexAdd(
      mg.tensor(base, { shape: [outer, rows, cols] }),
      1,
      mg.tensor(idx, { dtype: "i32" }),
      mg.tensor(src, { shape: [outer, n, cols] }),
    );
    assert.deepEqual(await out.data(), want, `${outer} × ${rows} rows × ${cols}, index of ${n}`);
    out.dispose();
  }
});
