/**
 * KimiLM.loss with Hugging Face's conventions (`labels`, shifted inside, −100 ignored) vs a
 * float64 computation of transformers' ForCausalLMLoss on the model's logits, against the
 * unshifted-targets form, and token id range errors (host data checked for free, GPU tensors
 * by one readback). Tolerance: the loss is a mean of logsumexp − logit over ≤ 14 rows of 32
 * classes from f32 logits, computed in f64 here: 1e-5 relative covers f32 rounding of
 * logsumexp (~1e-6).
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { KimiLM } from "../nn/mod.ts";
import { gpu, microConfig } from "./util.ts";

const micro = microConfig();

const IDS = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]];

/** transformers' ForCausalLMLoss in float64: mean CE of logits[:, :-1] vs labels[:, 1:]. */
function hfLoss(logits: ArrayLike<number>, labels: number[][], V: number): number {
  const T = labels[0].length;
  let sum = 0, count = 0;
  labels.forEach((row, b) => {
    for (let t = 0; t < T - 1; t++) {
      const y = row[t + 1];
      if (y === -100) continue;
      const o = (b * T + t) * V;
      let m = -Infinity;
      for (let c = 0; c < V; c++) m = Math.max(m, logits[o + c]);
      let z = 0;
      for (let c = 0; c < V; c++) z += Math.exp(logits[o + c] - m);
      sum += m + Math.log(z) - logits[o + y];
      count++;
    }
  });
  return sum / count;
}

function near(a: number, b: number, rtol: number, what: string): void {
  if (!(Math.abs(a - b) <= rtol * Math.abs(b))) throw new Error(`${what}: ${a} vs ${b}`);
}

Deno.test("loss(ids, { labels }) = HF ForCausalLMLoss (shift inside, −100 ignored) in float64 (1e-5)", async () => {
  await gpu();
  const model = new KimiLM(micro, { seed: 3 });
  try {
    const x = mg.tensor(Int32Array.from(IDS.flat()), { shape: [2, 8] });
    const logits = mg.noGrad(() => model.forward(x));
    const lv = await logits.data();
    logits.dispose();
    for (
      const labels of [
        IDS,
        [[3, -100, 4, 1, -100, 9, 2, 6], [2, 7, 1, -100, 2, 8, 1, -100]],
        [[-100, 5, 5, 5, 5, 5, 5, 5], [0, 31, 0, 31, 0, 31, 0, 31]],
      ]
    ) {
      const want = hfLoss(lv, labels, 32);
      const l1 = mg.noGrad(() => model.loss(IDS, { labels }));
      near(await l1.item(), want, 1e-5, `host labels ${JSON.stringify(labels)}`);
      const lt = mg.tensor(Int32Array.from(labels.flat()), { shape: [2, 8] });
      const l2 = mg.noGrad(() => model.loss(x, { labels: lt }));
      near(await l2.item(), want, 1e-5, "tensor labels");
      // The unshifted form with targets shifted by hand (last position ignored) agrees.
      const targets = labels.map((r) => [...r.slice(1), -100]);
      const l3 = mg.noGrad(() => model.loss(x, targets));
      near(await l3.item(), want, 1e-5, "unshifted targets");
      for (const t of [l1, l2, l3, lt]) t.dispose();
    }
    // Everything ignored: NaN, as PyTorch's mean over no tokens.
    const none = mg.noGrad(() => model.loss(IDS, { labels: IDS.map((r) => r.map(() => -100)) }));
    assert.ok(Number.isNaN(await none.item()));
    none.dispose();
    x.dispose();
  } finally {
    model.dispose();
  }
});

Deno.test("loss(ids, { labels }) gradients equal the hand-shifted unshifted form's (1e-5)", async () => {
  await gpu();
  const a = new KimiLM(micro, { seed: 4 });
  const b = new KimiLM(micro, { seed: 4 });
  try {
    mg.scope(() => a.loss(IDS, { labels: IDS }).backward());
    mg.scope(() => b.loss(IDS, IDS.map((r) => [...r.slice(1), -100])).backward());
    const pa = new Map(a.namedParameters());
    let compared = 0;
    for (const [name, p] of b.namedParameters()) {
      const ga = await pa.get(name)!.grad!.data();
      const gb = await p.grad!.data();
      let m = 0;
      for (const v of gb) m = Math.max(m, Math.abs(v));
      for (let i = 0; i < ga.length; i++) {
        if (Math.abs(ga[i] - gb[i]) > 1e-5 * Math.max(m, 1e-3)) {
          throw new Error(`${name}[${i}]: ${ga[i]} vs ${gb[i]}`);
        }
      }
      compared++;
    }
    assert.ok(compared > 10);
  } finally {
    a.dispose();
    b.dispose();
  }
});

Deno.test("token ids outside [0, vocab) are errors naming the id and its [batch, position]", async () => {
  await gpu();
  const model = new KimiLM(micro, { seed: 5 });
  try {
    const bad = [[1, 2, 3, 4], [5, 6, 7, 32]];
    assert.throws(() => model.forward(bad), /KimiLM\.forward.*ids holds 32 at \[1, 3\].*\[0, 32\)/);
    assert.throws(() => model.loss(bad, { labels: bad }), /ids holds 32 at \[1, 3\]/);
    assert.throws(
      () => model.loss([[1, -1, 3]], { labels: [[1, 2, 3]] }),
      /ids holds -1 at \[0, 1\]/,
    );
    assert.throws(
      () => model.loss([[1, 2, 3]], { labels: [[1, -5, 3]] }),
      /labels holds -5 at \[0, 1\].*or -100 \(ignored\)/,
    );
    assert.throws(
      () => model.loss({ data: Int32Array.of(1, 2, 3, 4), shape: [2, 2] }, [[0, 1], [2, 40]]),
      /targets holds 40 at \[1, 1\]/,
    );
    assert.throws(() => model.loss([[1]], { labels: [[1]] }), /labels need T >= 2/);
    assert.throws(() => model.loss([[1, 2]], { labels: [[1, 2, 3]] }), /must match ids/);
    await mg.sync();
    const before = mg.memory().inUseBytes;
    assert.throws(() => model.forward([[1, 2], [3, 99]]), /99 at \[1, 1\]/);
    await mg.sync();
    assert.equal(mg.memory().inUseBytes, before, "a refused batch uploads nothing");
    // Host ids and a tensor of the same ids give the same logits.
    const t = mg.tensor(Int32Array.from(IDS.flat()), { shape: [2, 8] });
    const l1 = mg.noGrad(() => model.forward(t));
    const l2 = mg.noGrad(() => model.forward({ data: IDS.flat(), shape: [2, 8] }));
    assert.deepEqual(await l2.data(), await l1.data());
    // GPU ids are checked by one readback.
    await model.checkTokenIds(t, t);
    const g = mg.tensor(Int32Array.of(1, 2, 3, 4, 5, 6, 7, 1000), { shape: [2, 4] });
    await assert.rejects(() => model.checkTokenIds(g), /checkTokenIds.*ids holds 1000 at \[1, 3\]/);
    const lab = mg.tensor(Int32Array.of(-100, 2, 3, -7), { shape: [1, 4] });
    const ok = mg.tensor(Int32Array.of(1, 2, 3, 4), { shape: [1, 4] });
    await assert.rejects(() => model.checkTokenIds(ok, lab), /labels holds -7 at \[0, 3\]/);
    for (const x of [t, l1, l2, g, lab, ok]) x.dispose();
  } finally {
    model.dispose();
  }
});
