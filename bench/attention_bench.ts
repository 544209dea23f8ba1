/**
 * Fused causal attention, forward and forward+backward, at a CPU-friendly size
 * (B 1, H 4, T = S 256, D 64, f32). Every iteration waits for the GPU (`await mg.sync()`).
 * GFLOP/s use the FlashAttention convention: forward 4·B·H·T·S·D, halved for causal; the
 * backward counts 2.5× the forward (the kernels recompute P, so they do a bit more work).
 *
 * Run: XDG_RUNTIME_DIR=/tmp deno bench -A bench/attention_bench.ts
 */
import * as mg from "../mod.ts";
import { attention } from "../ops/attention.ts";

await mg.init();

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

/** Mean seconds per call over `n` calls after a warm-up, waiting for the GPU. */
async function timeIt(fn: () => void, n: number): Promise<number> {
  fn();
  await mg.sync();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  await mg.sync();
  return (performance.now() - t0) / 1000 / n;
}

const tf = await timeIt(forward, 5);
const tb = await timeIt(forwardBackward, 3);
console.log(
  `attention B${B} H${H} T${T} D${D} causal f32 (${mg.deviceInfo().description}): ` +
    `forward ${(tf * 1e3).toFixed(2)} ms, ${(fwdFlops / tf / 1e9).toFixed(2)} GFLOP/s; ` +
    `forward+backward ${(tb * 1e3).toFixed(2)} ms, ${
      (3.5 * fwdFlops / tb / 1e9).toFixed(2)
    } GFLOP/s`,
);

Deno.bench({
  name: `attention forward B${B} H${H} T${T} D${D} causal`,
  group: "attention",
  baseline: true,
  async fn() {
    forward();
    await mg.sync();
  },
});

Deno.bench({
  name: `attention forward+backward B${B} H${H} T${T} D${D} causal`,
  group: "attention",
  async fn() {
    forwardBackward();
    await mg.sync();
  },
});
