import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { assertClose, gpu, seededValues } from "./util.ts";

const tol = { rtol: 1e-5, atol: 1e-6 };

Deno.test("a tensor used twice gets the sum of both gradients", async () => {
  await gpu();
  const x = mg.tensor([1, -2, 3], { requiresGrad: true });
  const y = x.mul(x).add(x.mul(3)).sum(); // d/dx = 2x + 3
  y.backward();
  assertClose(await x.grad!.data(), [5, -1, 9], tol, "grad");
  x.dispose();
  y.dispose();
});

Deno.test("backward through a diamond-shaped graph", async () => {
  await gpu();
  const x = mg.tensor([0.5, 1.5], { requiresGrad: true });
  const a = x.exp();
  const b = a.sin();
  const c = a.cos();
  const loss = b.mul(c).sum(); // sin(e^x)cos(e^x) = sin(2e^x)/2 → d/dx = cos(2e^x) e^x
  loss.backward();
  const want = [0.5, 1.5].map((v) => Math.cos(2 * Math.exp(v)) * Math.exp(v));
  assertClose(await x.grad!.data(), want, { rtol: 1e-5, atol: 1e-5 }, "diamond");
  for (const t of [x, a, b, c, loss]) t.dispose();
});

Deno.test("detach stops gradients; noGrad records nothing", async () => {
  await gpu();
  const x = mg.tensor([2, 3], { requiresGrad: true });
  const d = x.detach();
  assert.equal(d.requiresGrad, false);
  const loss = x.mul(d).sum(); // gradient d (not 2x)
  loss.backward();
  assertClose(await x.grad!.data(), [2, 3], tol, "detach");
  const before = mg.memory().inUseBytes;
  const z = mg.noGrad(() => mg.scope(() => x.exp().mul(2)));
  assert.equal(z.requiresGrad, false);
  assert.equal(z.gradFn, null);
  assert.equal(mg.memory().inUseBytes - before, z.storage().buf.size, "nothing saved, only z");
  for (const t of [x, d, loss, z]) t.dispose();
});

Deno.test("backward is linear in the upstream gradient", async () => {
  await gpu();
  const x = mg.tensor(seededValues(12, 5), { shape: [3, 4], requiresGrad: true });
  const g1 = mg.tensor(seededValues(12, 6), { shape: [3, 4] });
  const g2 = mg.tensor(seededValues(12, 7), { shape: [3, 4] });
  const run = async (g: mg.Tensor) => {
    x.zeroGrad();
    const y = x.tanh().mul(x.sigmoid());
    y.backward(g);
    y.dispose();
    return await x.grad!.data();
  };
  const r1 = await run(g1);
  const r2 = await run(g2);
  const g12 = g1.mul(2).add(g2.mul(-3));
  const r12 = await run(g12);
  assertClose(r12, r1.map((v, i) => 2 * v - 3 * r2[i]), { rtol: 1e-5, atol: 1e-6 }, "linearity");
  for (const t of [x, g1, g2, g12]) t.dispose();
});

Deno.test("broadcast inputs get gradients reduced to their own shape", async () => {
  await gpu();
  const a = mg.tensor([[1], [2], [3]], { requiresGrad: true }); // [3, 1]
  const b = mg.tensor([10, 20, 30, 40], { requiresGrad: true }); // [4]
  a.mul(b).sum().backward();
  assert.deepEqual(a.grad!.shape, [3, 1]);
  assert.deepEqual(await a.grad!.toArray(), [[100], [100], [100]]);
  assert.deepEqual(await b.grad!.toArray(), [6, 6, 6, 6]);
  a.dispose();
  b.dispose();
});

Deno.test("clear errors: backward twice, non-scalar backward, integer grads", async () => {
  await gpu();
  const x = mg.tensor([1, 2], { requiresGrad: true });
  const y = x.exp().sum();
  y.backward();
  assert.throws(() => y.backward(), /already freed.*retainGraph/);
  const v = x.mul(2);
  assert.throws(() => v.backward(), /needs a scalar.*shape \[2\]/);
  assert.throws(
    () => mg.tensor([1, 2], { dtype: "i32", requiresGrad: true }),
    /moongrad\.tensor: requiresGrad needs a floating-point dtype \(f32 or f16\), got i32/,
  );
  const ints = mg.tensor([1, 2], { dtype: "i32" });
  assert.throws(() => ints.requiresGrad_(), /got i32/);
  const z = x.exp().sum();
  z.backward(undefined, { retainGraph: true });
  z.backward();
  assertClose(
    await x.grad!.data(),
    [1, 2].map((v) => 3 * Math.exp(v)),
    tol,
    "accumulated over 3 backwards",
  );
  for (const t of [x, y, v, ints, z]) t.dispose();
});

Deno.test("saved tensors are released by backward, or when the graph is dropped", async () => {
  await gpu();
  const w = mg.randn([64], { seed: 1, requiresGrad: true });
  const start = mg.memory().inUseBytes;
  mg.scope(() => {
    const loss = w.exp().mul(w.sin()).sum();
    loss.backward();
  });
  const afterBackward = mg.memory().inUseBytes;
  assert.equal(afterBackward - start, w.grad!.storage().buf.size, "only w.grad remains");
  mg.scope(() => {
    w.exp().mul(w.sin()).sum(); // forward only, never backward
  });
  assert.equal(mg.memory().inUseBytes, afterBackward, "a dropped graph frees what it saved");
  w.zeroGrad();
  w.dispose();
});
