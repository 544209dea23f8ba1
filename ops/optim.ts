/**
 * The optimizer kernels, by job (this module re-exports them for optim/ and the tests):
 * - ops/optim_update.ts: fused SGD and AdamW updates (Muon's momentum and apply run
 *   multi-tensor in ops/muon_batch.ts, AdamW's in ops/adamw_multi.ts);
 * - ops/ns_normalize.ts: Newton–Schulz's per-matrix Frobenius normalisation;
 * - ops/gram.ts: the symmetric rank-k product with fused epilogue (Newton–Schulz's matmuls);
 * - ops/finite.ts: the non-finite gradient check.
 */
export {
  type AdamWKernelArgs,
  adamwUpdate,
  type SgdKernelArgs,
  sgdUpdate,
} from "./optim_update.ts";
export { frobeniusNormalize } from "./ns_normalize.ts";
export { gram, GRAM_CONFIG, type GramConfig, type GramOptions } from "./gram.ts";
export { flagNonFinite } from "./finite.ts";
