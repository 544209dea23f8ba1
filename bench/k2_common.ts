/**
 * What bench/k2_bench.ts and bench/torch_export.ts (for bench/torch_bench.py) share, so that
 * moongrad and PyTorch time the same training step: the batch of token ids and the group name
 * of the training-step rows.
 */
import { values } from "./peers.ts";

/**
 * The batch of the training-step benches: B × (T + 1) deterministic byte ids, split into
 * inputs `xs` (positions 0 … T − 1 of each row) and next-token targets `ys` (1 … T).
 */
export function trainingBatch(batch: number, seq: number): { xs: number[]; ys: number[] } {
  const ids = values(batch * (seq + 1), 7).map((v) => Math.floor((v + 1) * 127.99));
  const xs: number[] = [], ys: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      xs.push(ids[b * (seq + 1) + t]);
      ys.push(ids[b * (seq + 1) + t + 1]);
    }
  }
  return { xs, ys };
}

/** "training step MuonClip tiny 4x64 tokens": the group torch_bench.py's rows join. */
export function trainingStepGroup(optimizer: string, batch: number, seq: number): string {
  return `training step ${optimizer} tiny ${batch}x${seq} tokens`;
}
