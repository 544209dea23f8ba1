/**
 * Batched Newton–Schulz for Muon: every matrix of a step (a 2-D parameter is one, a stacked
 * expert weight [E, A, B] is E) goes into a batch [N, R, K] with the others of its shape, so
 * one batched `newtonSchulz` call (22 dispatches for 5 steps) serves a whole group instead of
 * one call per parameter.
 *
 * Grouping (`planNsGroups`). A matrix [A, B] is taken in wide orientation [r, k] =
 * [min, max] (a tall one is gathered transposed; NS(Gᵀ) = NS(G)ᵀ, the same rule
 * newtonSchulz applies to tall input) and zero-padded to multiples of 4 (so the gram kernel's
 * vec4 path always applies). Matrices of equal padded [R, K] share a batch. Then smaller
 * shapes merge into a larger batch [R', K'] ⊇ [R, K] (zero padding is exact: see
 * ops/muon_batch.ts) while the padding's share of the merged batch's Newton–Schulz work
 * (∝ R²·K per matrix) stays ≤ `padSlack` (default 0.25). That trades launches for flops: on a
 * GPU the small matrices of a layer are launch-bound, so merging is nearly free; on a CPU
 * adapter the extra flops cost up to ~10–15 % of the phase (measured below). A batch never exceeds `maxBytes`
 * (Muon's nsMaxBatchBytes, 64 MiB by default: the batch and Newton–Schulz's temporaries are
 * the step's peak extra memory), the device's storage binding size, or
 * maxComputeWorkgroupsPerDimension matrices (newtonSchulz's batch is a grid axis); a larger
 * group splits, a stack [E, A, B] across batches if need be.
 *
 * Measured on the tiny K2 preset (44 Muon parameters, 9 distinct shapes, 5 quintic steps;
 * tests/dispatch_count_test.ts): per-parameter Newton–Schulz took 1056 Muon/NS/matmul
 * dispatches per step (MuonClip's whole optimizer phase 1123); batched and merged, 2 batches
 * ([104, 128, 128] and [3, 128, 384]) take 44 NS dispatches, and the multi-tensor gather and
 * apply launches (ops/muon_batch.ts) 8 + 7 (phase 77 with multi-tensor AdamW). With
 * `padSlack` 0 (equal shapes only) the NS takes 7 batches (154 dispatches). On llvmpipe the
 * phase is compute-bound and the machine shared, so timings scatter: optimizer phase of a
 * MuonClip step (min of 9 steps per run, load 2–4 on 2 cores) 498–816 ms before batching,
 * 434–1038 ms batched (per-parameter gather/apply), 623–1042 ms with multi-tensor launches,
 * and 396–674 ms with slack 0, whose process CPU time (680–760 ms against 750–1170 ms) is
 * consistently the lowest: on a CPU the padding's extra flops cost ~10–15 %. On a GPU these matrices are launch-bound
 * (~12 µs per dispatch on an H100, DESIGN.md), so the 110 saved launches outweigh the
 * padding: 0.25 is the default, and `nsPadSlack: 0` suits CPU adapters.
 *
 * Design choice: multi-tensor launches over separate bindings, not a parameter/gradient
 * arena. WebGPU binds one buffer per binding and every tensor is a sub-buffer of a pool slab,
 * so a kernel that updates many parameters needs them in one buffer or one binding each.
 * Gradients are new tensors that backward allocates (the linear layers' are transposed views
 * of a matmul output), so getting them into an arena costs one copy per parameter wherever it
 * happens (in backward's leaf accumulation or here). Binding each tensor separately costs
 * nothing extra: a launch takes as many parameters as the device's storage buffers per stage
 * and the 63-word parameter block allow (6 gathers, 8 applies, 4 AdamW on wgpu/lavapipe's 32;
 * fewer on Dawn's 12). An arena would pay once backward writes leaf gradients straight into it
 * (vjps with an output target); then each update kind is one launch per batch.
 */
import { gpuDevice } from "../core/device.ts";
import { MoongradError } from "../core/errors.ts";

/** One parameter's matrices (all, or a run of a stack split over batches) in a batch. */
export interface NsMember {
  /** Index of the parameter in the list given to `planNsGroups`. */
  index: number;
  /** First matrix of the parameter taken (0 unless a stack is split over batches). */
  start: number;
  /** Matrices taken (E for a whole stack [E, A, B], 1 for a matrix). */
  count: number;
  /** Index of its first matrix in the batch. */
  first: number;
}

/** One Newton–Schulz batch [count, R, K] (R ≤ K) and the parameters it holds. */
export interface NsGroup {
  /** Rows of each (padded) matrix. */
  R: number;
  /** Columns of each (padded) matrix. */
  K: number;
  /** Matrices in the batch. */
  count: number;
  /** The parameters, in the batch's order. */
  members: NsMember[];
}

/** Options of `planNsGroups`. */
export interface NsPlanOptions {
  /** Largest share of padding in a merged batch's work (default 0.25; 0 merges equal shapes only). */
  padSlack?: number;
  /** Largest batch in bytes (capped by the device's storage binding limit; default that limit). */
  maxBytes?: number;
}

const round4 = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);
const work = (R: number, K: number) => R * R * K;

interface Bucket {
  R: number;
  K: number;
  /** [parameter index, matrices] in order. */
  items: [number, number][];
  matrices: number;
  /** Σ matrices · r²·k of the unpadded shapes (useful work). */
  useful: number;
}

/**
 * Groups Muon parameters (shapes [A, B] or [E, A, B]) into Newton–Schulz batches (see the
 * module doc). Deterministic: the same shapes give the same plan.
 *
 * @example Group two layers' matrices
 * ```ts
 * import { planNsGroups } from "./muon_batch.ts";
 * const plan = planNsGroups([[64, 128], [128, 64], [8, 64, 64]], { maxBytes: 1 << 26 });
 * console.log(plan.map((g) => [g.count, g.R, g.K])); // [[2, 64, 128], [8, 64, 64]]
 * ```
 */
export function planNsGroups(
  shapes: readonly (readonly number[])[],
  options: NsPlanOptions = {},
): NsGroup[] {
  const slack = options.padSlack ?? 0.25;
  if (!(slack >= 0)) throw new MoongradError("Muon", `padSlack must be >= 0, got ${slack}`);
  const l = gpuDevice("Muon").limits;
  const maxBytes = Math.min(
    options.maxBytes ?? Infinity,
    l.maxStorageBufferBindingSize,
    l.maxBufferSize,
  );
  // newtonSchulz launches one workgroup row per matrix of its batch.
  const maxMatrices = l.maxComputeWorkgroupsPerDimension;
  const buckets = new Map<string, Bucket>();
  shapes.forEach((s, index) => {
    const A = s[s.length - 2];
    const B = s[s.length - 1];
    const E = s.length === 3 ? s[0] : 1;
    if (E === 0 || A === 0 || B === 0) return;
    const R = round4(Math.min(A, B));
    const K = round4(Math.max(A, B));
    const key = `${R}x${K}`;
    let b = buckets.get(key);
    if (!b) buckets.set(key, b = { R, K, items: [], matrices: 0, useful: 0 });
    b.items.push([index, E]);
    b.matrices += E;
    b.useful += E * work(Math.min(A, B), Math.max(A, B));
  });
  // Largest shapes first: each later (smaller) bucket merges into the placed batch that
  // wastes least, if the merged batch's padding stays within the slack.
  const order = [...buckets.values()].sort((x, y) => work(y.R, y.K) - work(x.R, x.K) || y.K - x.K);
  const placed: Bucket[] = [];
  for (const b of order) {
    let best: Bucket | null = null;
    let bestWaste = Infinity;
    for (const t of placed) {
      if (t.R < b.R || t.K < b.K) continue;
      const total = (t.matrices + b.matrices) * work(t.R, t.K);
      const useful = t.useful + b.useful;
      const waste = (total - useful) / total;
      if (waste <= slack && waste < bestWaste) [best, bestWaste] = [t, waste];
    }
    if (best) {
      best.items.push(...b.items);
      best.matrices += b.matrices;
      best.useful += b.useful;
    } else placed.push({ ...b, items: [...b.items] });
  }
  const out: NsGroup[] = [];
  for (const b of placed) {
    const perMatrix = b.R * b.K * 4;
    const cap = Math.max(1, Math.min(maxMatrices, Math.floor(maxBytes / perMatrix)));
    let g: NsGroup | null = null;
    for (const [index, E] of b.items) {
      for (let start = 0; start < E;) {
        if (!g || g.count === cap) {
          g = { R: b.R, K: b.K, count: 0, members: [] };
          out.push(g);
        }
        const count = Math.min(E - start, cap - g.count);
        g.members.push({ index, start, count, first: g.count });
        g.count += count;
        start += count;
      }
    }
  }
  return out;
}
