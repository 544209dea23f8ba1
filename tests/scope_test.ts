/**
 * `scope()` as the nn forwards use it: nested scopes free intermediates without touching what
 * the autograd tape saved (backward after the scopes gives the same gradients as without
 * them), `also` keeps the tensors a nested call pushed into a collector and moves them to the
 * enclosing scope, and a throwing body frees everything it made.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { assertClose, gpu, microConfig } from "./util.ts";

await gpu();

Deno.test("scope: `also` keeps collector tensors, which then belong to the enclosing scope", async () => {
  const before = mg.memory().liveTensors;
  const kept: mg.Tensor[] = [];
  let liveInside = -1;
  const y = mg.scope(() => {
    const inner = mg.scope(() => {
      kept.push(mg.ones([3]).mul(2)); // the mul survives via `also`; the ones is freed
      return mg.ones([3]).add(1);
    }, kept);
    liveInside = mg.memory().liveTensors - before;
    assert.ok(!kept[0].isDisposed);
    return inner;
  });
  assert.equal(liveInside, 2, "after the inner scope: its result and the collected tensor");
  // The outer scope did not return kept[0] nor pass `kept`: it freed it.
  assert.ok(kept[0].isDisposed);
  assert.deepEqual(await y.toArray(), [2, 2, 2]);
  assert.equal(mg.memory().liveTensors - before, 1);
  y.dispose();
});

Deno.test("scope: nested scopes free intermediates but not what backward needs", async () => {
  const w = mg.randn([6, 5], { seed: 3, requiresGrad: true });
  const x = mg.randn([4, 6], { seed: 4 });
  const before = mg.memory().liveTensors;
  // By hand: every intermediate disposed right after use (what the nn forwards used to do).
  const a0 = x.matmul(w), a1 = a0.silu(), b0 = x.matmul(w), b1 = b0.sigmoid();
  const c0 = a1.mul(b1), c1 = c0.square();
  for (const t of [a0, a1, b0, b1, c0]) t.dispose();
  const plain = c1.mean();
  c1.dispose();
  const liveByHand = mg.memory().liveTensors - before; // the loss + the tape's saved handles
  plain.backward();
  const expected = await w.grad!.data();
  w.zeroGrad();
  plain.dispose();
  assert.equal(mg.memory().liveTensors, before);

  const loss = mg.scope(() => {
    const a = mg.scope(() => x.matmul(w).silu());
    const b = mg.scope(() => x.matmul(w).sigmoid());
    return mg.scope(() => a.mul(b).square()).mean();
  });
  assert.ok(liveByHand > 1);
  assert.equal(mg.memory().liveTensors - before, liveByHand, "same handles live as by hand");
  loss.backward();
  assertClose(await w.grad!.data(), expected, { rtol: 1e-6, atol: 1e-7 });
  loss.dispose();
  w.zeroGrad();
  assert.equal(mg.memory().liveTensors, before, "backward released what the tape saved");
  w.dispose();
  x.dispose();
});

Deno.test("scope: a throwing body frees what it made, collected tensors included", () => {
  const before = mg.memory().liveTensors;
  const kept: mg.Tensor[] = [];
  assert.throws(() =>
    mg.scope(() => {
      kept.push(mg.ones([2]));
      mg.zeros([2]).add(1);
      throw new Error("boom");
    }, kept), /boom/);
  assert.ok(kept[0].isDisposed);
  assert.equal(mg.memory().liveTensors, before);
});

Deno.test("scope: a MoE forward's aux loss reaches the caller's collector and its scope", async () => {
  const config = microConfig({ aux_loss_alpha: 0.01 });
  const moe = new mg.nn.DeepseekMoE(config, { seed: 0 });
  moe.train();
  const x = mg.randn([2, 3, config.hidden_size], { seed: 1, requiresGrad: true });
  const before = mg.memory().liveTensors;
  const auxLosses: mg.Tensor[] = [];
  const total = mg.scope(() => {
    const y = moe.forward(x, { auxLosses });
    assert.equal(auxLosses.length, 1);
    assert.ok(!auxLosses[0].isDisposed, "the forward's own scopes must not free the aux loss");
    return y.square().mean().add(auxLosses[0]);
  });
  assert.ok(auxLosses[0].isDisposed, "the caller's scope frees it (it was not returned)");
  total.backward();
  const gx = await x.grad!.data();
  assert.ok(gx.every(Number.isFinite));
  total.dispose();
  x.zeroGrad();
  for (const p of moe.parameters()) p.zeroGrad();
  assert.equal(mg.memory().liveTensors, before, "nothing of the forward outlives backward");
  x.dispose();
  moe.dispose();
});
