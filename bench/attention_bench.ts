/**
 * Fused causal attention, forward and forward+backward, at a CPU-friendly size
 * (B 1, H 4, T = S 256, D 64, f32). Every iteration waits for the GPU (`await mg.sync()`).
 * GFLOP/s use the FlashAttention convention: forward 4·B·H·T·S·D, halved for causal; the
 * backward counts 2.5× the forward (the kernels recompute P, so they do a bit more work).
 *
 *   deno task bench bench/attention_bench.ts
 */
import * as mg from "../mod.ts";
import { attention } from "../ops/attention.ts";
import { benchCase } from "./harness.ts";

const info = await mg.init();
console.log(`attention on ${info.description}`);

const [B, H, T, D] = [1, 4, 256, 64];
const q = mg.randn([B, H, T, D], { seed: 1, requiresGrad: true });
const k = mg.randn([B, H, T, D], { seed: 2, requiresGrad: true });
const v = mg.randn([B, H, T, D], { seed: 3, requiresGrad: true });
const g = mg.randn([B, H, T, D], { seed: 4 });
const fwdFlops = (4 * B * H * T * T * D) / 2;

function forward(): void {
  mg.noGrad(() => {
    const { out, maxLogits } = attention(q, k, v);
    out.dispose();
    maxLogits.dispose();
  });
}

function forwardBackward(): void {
  const { out, maxLogits } = attention(q, k, v);
  out.backward(g);
  for (const t of [q, k, v]) t.zeroGrad();
  out.dispose();
  maxLogits.dispose();
}

for (
  const [name, fn, flops, n] of [
    ["forward", forward, fwdFlops, 5],
    ["forward+backward", forwardBackward, 3.5 * fwdFlops, 3],
  ] as const
) {
  await benchCase({
    group: `attention ${name} B${B} H${H} T${T} D${D} causal f32`,
    work: { flops },
    n,
    impls: [{
      lib: "moongrad",
      prepare: () =>
        Promise.resolve({
          async run() {
            fn();
            await mg.sync();
          },
        }),
    }],
  });
}
