import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { gpu, seededValues } from "./util.ts";

/** Four Gaussian blobs in XOR layout: class = (x > 0) xor (y > 0). Not linearly separable. */
function xorBlobs(n: number): { points: Float32Array; labels: Int32Array } {
  const noise = seededValues(2 * n, 99, -0.35, 0.35);
  const points = new Float32Array(2 * n);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const qx = i % 2 ? 1 : -1;
    const qy = (i >> 1) % 2 ? 1 : -1;
    points[2 * i] = qx + noise[2 * i];
    points[2 * i + 1] = qy + noise[2 * i + 1];
    labels[i] = qx * qy > 0 ? 0 : 1;
  }
  return { points, labels };
}

interface Mlp {
  w1: mg.Tensor;
  b1: mg.Tensor;
  w2: mg.Tensor;
  b2: mg.Tensor;
}

function makeMlp(hidden: number): Mlp {
  return {
    w1: mg.randn([2, hidden], { seed: 1, std: 0.7, requiresGrad: true }),
    b1: mg.zeros([hidden], { requiresGrad: true }),
    w2: mg.randn([hidden, 2], { seed: 2, std: 0.3, requiresGrad: true }),
    b2: mg.zeros([2], { requiresGrad: true }),
  };
}

const logits = (p: Mlp, x: mg.Tensor) => x.matmul(p.w1).add(p.b1).relu().matmul(p.w2).add(p.b2);

/** One training step the documented way: scope, forward, backward, in-place SGD update. */
function step(p: Mlp, x: mg.Tensor, y: mg.Tensor, lr: number): mg.Tensor {
  return mg.scope(() => {
    const loss = mg.crossEntropy(logits(p, x), y);
    loss.backward();
    mg.noGrad(() => {
      for (const w of Object.values(p)) {
        w.assign(w.sub(w.grad!.mul(lr)));
        w.zeroGrad();
      }
    });
    return loss.detach();
  });
}

Deno.test("a 2-layer MLP trained with hand-written SGD reaches >= 95% accuracy on XOR blobs", async () => {
  await gpu();
  const { points, labels } = xorBlobs(256);
  const x = mg.tensor(points, { shape: [256, 2] });
  const y = mg.tensor(labels);
  const p = makeMlp(32);
  let first = NaN;
  let last = NaN;
  const t0 = performance.now();
  for (let i = 0; i < 150; i++) {
    const loss = step(p, x, y, 0.5);
    if (i === 0) first = await loss.item();
    if (i === 149) last = await loss.item();
    loss.dispose();
  }
  const ms = performance.now() - t0;
  const pred = mg.noGrad(() => mg.scope(() => logits(p, x).argmax(-1)));
  const correct = mg.scope(() => pred.eq(y).cast("f32").mean());
  const acc = await correct.item();
  console.log(
    `loss ${first.toFixed(3)} -> ${last.toFixed(3)}, accuracy ${(acc * 100).toFixed(1)}%, ` +
      `${(ms / 150).toFixed(2)} ms per step (forward+backward+update)`,
  );
  assert.ok(acc >= 0.95, `accuracy ${acc}`);
  for (const t of [x, y, pred, correct, ...Object.values(p)]) t.dispose();
});

Deno.test("200 training iterations keep in-use bytes flat", async () => {
  await gpu();
  const { points, labels } = xorBlobs(64);
  const x = mg.tensor(points, { shape: [64, 2] });
  const y = mg.tensor(labels);
  const p = makeMlp(16);
  step(p, x, y, 0.1).dispose(); // warm-up
  const start = mg.memory();
  for (let i = 0; i < 200; i++) step(p, x, y, 0.1).dispose();
  const end = mg.memory();
  assert.equal(end.inUseBytes, start.inUseBytes);
  assert.equal(end.liveTensors, start.liveTensors);
  for (const t of [x, y, ...Object.values(p)]) t.dispose();
});
