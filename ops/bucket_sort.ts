/**
 * A stable counting sort of integer keys into buckets, on the GPU with no host round-trip:
 * per-block histograms (u32 atomics: in workgroup memory for up to 1024 buckets, else global
 * atomics into a zero-filled buffer), one single-workgroup scan giving the per-bucket counts,
 * the exclusive offsets and each block's base, then a placement pass ranking each key within
 * its block. Deterministic: keys keep their order within a bucket. MoE dispatch groups
 * (token, slot) pairs by expert with it; `indexAdd` groups source rows by target row.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { fillInPlace } from "./copy.ts";
import { denseView } from "./elementwise.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;
/** Keys per block of the sort (one workgroup each in the placement pass). */
const BLOCK = 256;
/** Most buckets counted in workgroup memory (4 KB of atomics) by the histogram pass. */
const LOCAL_BUCKETS = 1024;

/** Histogram and placement: key count, bucket count, element offset of the keys. */
const PAIRS = params("moe_bucket_pairs", { pairs: "u32", e: "u32", offset: "u32" });
/** The scan over per-block bucket counts: buckets and blocks. */
const SCAN = params("moe_scan", { e: "u32", blocks: "u32" });

/** The result of `bucketSort`; dispose its tensors when done. */
export interface BucketSort {
  /** i32 [B]: keys in each bucket. */
  readonly counts: Tensor;
  /** i32 [B + 1]: exclusive prefix sums of `counts` (offsets[B] = keys placed). */
  readonly offsets: Tensor;
  /** i32 [n]: the flat key index at each sorted position (the first offsets[B] are valid). */
  readonly perm: Tensor;
  /** i32 [n]: the sorted position of each key (unset for keys outside 0..B−1). */
  readonly inv: Tensor;
}

function buf(t: Tensor, op: string) {
  return t.storage(op).buf;
}

/**
 * Sorts the flattened i32 `keys` into `numBuckets` buckets (stable). Keys outside
 * 0..numBuckets−1 are left out of every bucket. Not differentiable.
 */
export function bucketSort(keys: Tensor, numBuckets: number): BucketSort {
  const op = "bucketSort";
  if (!(keys instanceof Tensor) || keys.dtype !== "i32") {
    throw new MoongradError(
      op,
      `keys must be an i32 Tensor, got ${
        keys instanceof Tensor ? `${keys.dtype} ${fmtShape(keys.shape)}` : typeof keys
      }`,
    );
  }
  keys.storage(op);
  if (!Number.isInteger(numBuckets) || numBuckets < 1) {
    throw new MoongradError(op, `numBuckets must be a positive integer, got ${numBuckets}`);
  }
  const e = numBuckets;
  const pairs = keys.size;
  const nb = Math.max(1, Math.ceil(pairs / BLOCK));
  const counts = Tensor.empty([e], "i32");
  const offsets = Tensor.empty([e + 1], "i32");
  const perm = Tensor.empty([pairs], "i32");
  const inv = Tensor.empty([pairs], "i32");
  const blocks = Tensor.empty([nb * e], "i32");
  const ix = denseView(keys);
  // Few buckets: each workgroup counts its block in workgroup memory and writes every count,
  // so the block histograms need no zero-fill dispatch. Many buckets (a vocabulary): global
  // atomics into zero-filled counts.
  const local = pairs > 0 && e <= LOCAL_BUCKETS;
  if (!local) fillInPlace(blocks, 0);
  const size = Math.max(WG, 2 ** Math.ceil(Math.log2(e)));
  const hist = local
    ? kernel({
      name: "moe_block_hist_local",
      bindings: [
        { name: "idx", type: "i32", access: "read" },
        { name: "bc", type: "u32", access: "read_write" },
      ],
      workgroupSize: [WG],
      params: PAIRS,
      prelude: `var<workgroup> lh: array<atomic<u32>, ${size}>;`,
      body: `
  let b = wid.y * nwg.x + wid.x;
  if (b * ${BLOCK}u >= p_pairs()) { return; }
  let e = p_e();
  for (var x = lidx; x < e; x += ${WG}u) { atomicStore(&lh[x], 0u); }
  workgroupBarrier();
  let p = b * ${BLOCK}u + lidx;
  if (p < p_pairs()) {
    let v = idx[p_offset() + p];
    if (v >= 0 && u32(v) < e) { atomicAdd(&lh[u32(v)], 1u); }
  }
  workgroupBarrier();
  for (var x = lidx; x < e; x += ${WG}u) { bc[b * e + x] = atomicLoad(&lh[x]); }`,
    })
    : kernel({
      name: "moe_block_hist",
      bindings: [
        { name: "idx", type: "i32", access: "read" },
        { name: "bc", type: "atomic<u32>", access: "read_write" },
      ],
      workgroupSize: [WG],
      params: PAIRS,
      body: `
  let p = ${linearId(WG)};
  if (p >= p_pairs()) { return; }
  let e = p_e();
  let x = idx[p_offset() + p];
  if (x < 0 || u32(x) >= e) { return; }
  atomicAdd(&bc[(p / ${BLOCK}u) * e + u32(x)], 1u);`,
    });
  if (pairs > 0) {
    dispatch(
      hist,
      [buf(ix.t, op), buf(blocks, op)],
      PAIRS.pack({ pairs, e, offset: ix.t.offset }),
      grid1d(pairs, WG),
    );
  }
  const scan = kernel({
    name: "moe_scan",
    bindings: [
      { name: "bc", type: "u32", access: "read_write" },
      { name: "counts", type: "i32", access: "read_write" },
      { name: "offsets", type: "u32", access: "read_write" },
    ],
    workgroupSize: [WG],
    params: SCAN,
    prelude: `var<workgroup> sh: array<u32, ${WG}>;`,
    body: `
  let e = p_e();
  let nb = p_blocks();
  var carry = 0u;
  for (var c = 0u; c < e; c += ${WG}u) {
    let x = c + lidx;
    var tot = 0u;
    if (x < e) {
      for (var b = 0u; b < nb; b++) { tot += bc[b * e + x]; }
    }
    sh[lidx] = tot;
    workgroupBarrier();
    for (var o = 1u; o < ${WG}u; o <<= 1u) {
      var v = 0u;
      if (lidx >= o) { v = sh[lidx - o]; }
      workgroupBarrier();
      sh[lidx] += v;
      workgroupBarrier();
    }
    let incl = sh[lidx];
    let chunk = sh[${WG - 1}u];
    workgroupBarrier();
    if (x < e) {
      let off = carry + incl - tot;
      counts[x] = i32(tot);
      offsets[x] = off;
      var run = off;
      for (var b = 0u; b < nb; b++) {
        let cnt = bc[b * e + x];
        bc[b * e + x] = run;
        run += cnt;
      }
    }
    carry += chunk;
  }
  if (lidx == 0u) { offsets[e] = carry; }`,
  });
  dispatch(
    scan,
    [buf(blocks, op), buf(counts, op), buf(offsets, op)],
    SCAN.pack({ e, blocks: nb }),
    [1],
  );
  if (pairs > 0) {
    const place = kernel({
      name: "moe_place",
      bindings: [
        { name: "idx", type: "i32", access: "read" },
        { name: "base", type: "u32", access: "read" },
        { name: "perm", type: "i32", access: "read_write" },
        { name: "inv", type: "i32", access: "read_write" },
      ],
      workgroupSize: [BLOCK],
      params: PAIRS,
      prelude: `var<workgroup> se: array<u32, ${BLOCK}>;`,
      body: `
  let b = wid.y * nwg.x + wid.x;
  let p = b * ${BLOCK}u + lidx;
  let e = p_e();
  var x = 0xffffffffu;
  if (p < p_pairs()) {
    let v = idx[p_offset() + p];
    if (v >= 0 && u32(v) < e) { x = u32(v); }
  }
  se[lidx] = x;
  workgroupBarrier();
  if (x == 0xffffffffu) { return; }
  var r = 0u;
  for (var j = 0u; j < lidx; j++) { if (se[j] == x) { r++; } }
  let pos = base[b * e + x] + r;
  perm[pos] = i32(p);
  inv[p] = i32(pos);`,
    });
    dispatch(
      place,
      [buf(ix.t, op), buf(blocks, op), buf(perm, op), buf(inv, op)],
      PAIRS.pack({ pairs, e, offset: ix.t.offset }),
      grid1d(nb, 1),
    );
  }
  ix.done();
  blocks.dispose();
  return { counts, offsets, perm, inv };
}
