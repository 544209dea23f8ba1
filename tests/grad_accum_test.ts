/**
 * Gradient accumulation at the library level: k micro-batches, each loss scaled by 1/k and
 * recorded into one StepStats, give MuonClip the same max logits (exactly: a max of maxes),
 * clip the same heads by the same γ and leave the same weights (to f32 tolerance) as one
 * batch of the same rows. Also global-norm gradient clipping (clipGradNorm) and the update
 * norm (UpdateNorm) against host arithmetic.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { assertClose, gpu, microConfig } from "./util.ts";

const B = 4, T = 8;
function rows(seed: number): number[][] {
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) >>> 0) % 32;
  return Array.from({ length: B }, () => Array.from({ length: T }, next));
}

async function oneStep(k: number, tau: number) {
  const config = microConfig();
  const lm = new mg.nn.KimiLM(config, { seed: 3 });
  const opt = new mg.optim.MuonClip(lm, { lr: 0.05, tau });
  const ids = rows(11), tgt = rows(12);
  const stats = new mg.nn.StepStats();
  const per = B / k;
  for (let i = 0; i < k; i++) {
    const x = ids.slice(i * per, (i + 1) * per), y = tgt.slice(i * per, (i + 1) * per);
    mg.scope(() => mg.mul(lm.loss(x, y, { stats }), 1 / k).backward());
  }
  const read = await stats.read(lm);
  await opt.step(stats);
  const heads = await opt.headStats();
  const clipped = await opt.clippedHeads();
  const params = await Promise.all(
    lm.namedParameters().map(async ([n, p]) => [n, await p.data()] as const),
  );
  opt.dispose();
  stats.dispose();
  lm.dispose();
  return { read, heads, clipped, params };
}

Deno.test("grad accumulation: 2 and 4 micro-batches with one StepStats clip and update exactly as one batch", async () => {
  await gpu();
  const probe = await oneStep(1, 1e9);
  const maxAll = Math.max(...probe.heads.maxLogits.flat());
  // τ between the heads' logits so that some heads are clipped and some are not.
  const sorted = probe.heads.maxLogits.flat().sort((a, b) => a - b);
  const tau = (sorted[0] + sorted.at(-1)!) / 2;
  assert.ok(tau < maxAll);
  const one = await oneStep(1, tau);
  assert.ok(one.clipped.length > 0, "some head is clipped");
  assert.ok(one.clipped.length < sorted.length, "some head is not");
  for (const k of [2, 4]) {
    const acc = await oneStep(k, tau);
    // The max logits are a max over the rows: exactly those of the whole batch.
    assert.deepEqual(acc.heads.maxLogits, one.heads.maxLogits, `k=${k}: max logits`);
    assert.deepEqual(
      acc.read.loads.map((l) => Array.from(l)),
      one.read.loads.map((l) => Array.from(l)),
      `k=${k}: expert loads`,
    );
    assert.deepEqual(
      acc.clipped.map((c) => [c.layer, c.head, c.gamma]),
      one.clipped.map((c) => [c.layer, c.head, c.gamma]),
      `k=${k}: clipped heads and γ`,
    );
    for (let i = 0; i < one.params.length; i++) {
      assertClose(acc.params[i][1], one.params[i][1], { rtol: 1e-4, atol: 2e-5 }, one.params[i][0]);
    }
  }
});

Deno.test("clipGradNorm: bounds the global norm, returns the pre-clip norm, leaves small norms untouched", async () => {
  await gpu();
  const lin = new mg.nn.Linear(8, 4, { seed: 0 });
  mg.scope(() => lin.forward(mg.randn([3, 8], { seed: 1 })).square().sum().backward());
  const grads = lin.parameters().map((p) => p.grad!);
  const host = await Promise.all(grads.map(async (g) => Array.from(await g.data())));
  const expected = Math.sqrt(host.reduce((a, g) => a + g.reduce((s, v) => s + v * v, 0), 0));
  assert.ok(expected > 0.1);
  // Above the norm: nothing changes, not even by rounding.
  assert.ok(
    Math.abs((await mg.optim.clipGradNorm(lin, expected * 2)) - expected) < 1e-4 * expected,
  );
  for (let i = 0; i < grads.length; i++) {
    assert.deepEqual(Array.from(await grads[i].data()), host[i]);
  }
  // Below it: the norm becomes maxNorm, direction kept.
  const max = expected / 4;
  const before = await mg.optim.clipGradNorm(lin, max);
  assert.ok(Math.abs(before - expected) < 1e-4 * expected, `${before} vs ${expected}`);
  const after = await mg.optim.globalNorm(grads);
  assert.ok(after <= max * (1 + 1e-5) && after > max * (1 - 1e-4), `${after} vs ${max}`);
  for (let i = 0; i < grads.length; i++) {
    assertClose(await grads[i].data(), host[i].map((v) => v * max / (expected + 1e-6)), {
      rtol: 1e-4,
      atol: 1e-7,
    }, "scaled grad");
  }
  await assert.rejects(() => mg.optim.clipGradNorm(lin, 0), /maxNorm must be > 0/);
  lin.dispose();
});

Deno.test("UpdateNorm: the global norm of W_after − W_before", async () => {
  await gpu();
  const lin = new mg.nn.Linear(8, 4, { seed: 0 });
  const before = await Promise.all(lin.parameters().map(async (p) => Array.from(await p.data())));
  const opt = new mg.optim.AdamW(lin, { lr: 0.01, weightDecay: 0.1 });
  mg.scope(() => lin.forward(mg.randn([3, 8], { seed: 1 })).square().sum().backward());
  const u = new mg.optim.UpdateNorm(lin);
  await opt.step();
  const got = await u.measure();
  const after = await Promise.all(lin.parameters().map((p) => p.data()));
  let ss = 0;
  after.forEach((a, i) => a.forEach((v, j) => (ss += (v - before[i][j]) ** 2)));
  assert.ok(Math.abs(got - Math.sqrt(ss)) < 1e-4 * Math.sqrt(ss), `${got} vs ${Math.sqrt(ss)}`);
  await assert.rejects(() => u.measure(), /already measured/);
  opt.dispose();
  lin.dispose();
});
