/**
 * Focused regression tests for the bugs the chain fuzz (fuzz_test.ts) found, each with the
 * seed that found it (with the fuzz's default seed 0x5eed = 24301).
 *
 * All were rank-0 (scalar) axis handling, where PyTorch wraps dims as if the rank were 1:
 * - seed 24324 and others: `x.sum(-1)` (and mean/max/min/var/argmax) on a scalar threw
 *   "axis -1 is out of range" while axis 0 worked (core/shape.ts normalizeAxis);
 * - seed 24358: `transpose(scalar, 0, 0)` threw from permute (ops/layout.ts);
 * - seed 24354: `squeeze(scalar, 0)` threw "axis 0 has size undefined";
 * - seed 24313: `slice(scalar, ...)` returned a tensor of shape [NaN] instead of an error.
 */
import assert from "node:assert/strict";
import * as mg from "../../mod.ts";
import { assertMgError, gpu } from "../util.ts";

Deno.test("reductions of a scalar accept axis -1 like axis 0 (PyTorch), with gradients", async () => {
  await gpu();
  const x = mg.tensor(2.5, { requiresGrad: true });
  for (const axis of [0, -1]) {
    for (const keepDims of [false, true]) {
      const outs = [
        x.sum(axis, keepDims),
        x.mean(axis, keepDims),
        x.max(axis, keepDims),
        x.min(axis, keepDims),
        x.var(axis, { keepDims, correction: 0 }),
      ];
      for (const o of outs) assert.deepEqual(o.shape, []);
      assert.deepEqual(await Promise.all(outs.map((o) => o.item())), [2.5, 2.5, 2.5, 2.5, 0]);
      const loss = mg.scope(() => outs[0].add(outs[1]).add(outs[2]).add(outs[3]));
      loss.backward();
      assert.deepEqual(await x.grad!.item(), 4);
      x.zeroGrad();
      const am = x.argmax(axis, keepDims);
      assert.deepEqual(await am.item(), 0);
      for (const t of [...outs, loss, am]) t.dispose();
    }
  }
  assertMgError(() => x.sum(-2), "sum", "-2", "rank 0", "-1..0");
  assertMgError(() => x.sum(1), "sum", "1", "rank 0");
  x.dispose();
});

Deno.test("transpose and squeeze of a scalar (axes 0 / -1) return the scalar; its grad flows", async () => {
  await gpu();
  const x = mg.tensor(1.5, { requiresGrad: true });
  const views = [x.transpose(0, 0), x.transpose(-1, 0), x.squeeze(0), x.squeeze(-1), x.squeeze()];
  for (const v of views) assert.deepEqual(v.shape, []);
  const loss = views.reduce((acc, v) => acc.add(v.mul(2)), mg.tensor(0));
  assert.deepEqual(await loss.item(), 15);
  loss.backward();
  assert.deepEqual(await x.grad!.item(), 10);
  for (const t of [x, ...views, loss]) t.dispose();
});

Deno.test("slice of a scalar is a MoongradError naming slice, and leaks nothing", async () => {
  await gpu();
  const x = mg.tensor(3);
  const before = mg.memory();
  assertMgError(() => x.slice(0, 0), "slice", "rank-0", "[]");
  assertMgError(() => x.slice(-1, 0, 1), "slice", "rank-0");
  const after = mg.memory();
  assert.ok(after.liveTensors === before.liveTensors && after.inUseBytes === before.inUseBytes);
  x.dispose();
});
