/**
 * Adapter limits (core/limits.ts): allocations past maxStorageBufferBindingSize /
 * maxBufferSize and launches past maxComputeWorkgroupsPerDimension throw a MoongradError
 * naming the op, the shape (or grid) and the limit before the device sees anything (nothing
 * recorded, nothing leaked); element-count grids that fold into 2-D stay correct past 65535
 * workgroups.
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { expectMgError, gpu } from "./util.ts";
import { kernel } from "../core/kernel.ts";
import { dispatch, runtimeStats } from "../core/runtime.ts";

Deno.test("allocations past the binding or buffer limit name the op, the shape and the limit, and leak nothing", async () => {
  const info = await gpu();
  const { maxStorageBufferBindingSize: bind } = info.limits;
  const over = Math.floor(bind / 4) + 1; // f32 elements one past the binding limit
  const before = mg.memory();
  let dispatches = runtimeStats().dispatches;
  expectMgError(() => mg.zeros([2 ** 17, 2 ** 16]), "moongrad.zeros:", "[131072, 65536]", "32 GiB");
  expectMgError(
    () => mg.ones([over]),
    "moongrad.ones:",
    `[${over}]`,
    "maxStorageBufferBindingSize",
  );
  expectMgError(() => mg.randn([over, 1]), "moongrad.randn:", `[${over}, 1]`);
  assert.equal(runtimeStats().dispatches, dispatches, "nothing reached the device");
  const side = Math.ceil(Math.sqrt(over));
  const a = mg.ones([side, 1]), b = mg.ones([1, side]);
  const mid = mg.memory();
  dispatches = runtimeStats().dispatches;
  expectMgError(() => mg.matmul(a, b), "moongrad.matmul:", `[${side}, ${side}]`, "bytes");
  const wide = a.expand([side, side]); // a view: no memory
  expectMgError(() => wide.contiguous(), "moongrad.contiguous:");
  wide.dispose();
  assert.equal(mg.memory().liveTensors, mid.liveTensors, "nothing left behind");
  assert.equal(mg.memory().inUseBytes, mid.inUseBytes);
  a.dispose();
  b.dispose();
  expectMgError(
    () => new mg.nn.KimiLM(mg.nn.makeConfig({ vocab_size: over })),
    "moongrad.KimiLM (parameter model.embed_tokens.weight):",
    "maxStorageBufferBindingSize",
  );
  assert.equal(mg.memory().liveTensors, before.liveTensors);
  assert.equal(mg.memory().inUseBytes, before.inUseBytes);
  assert.equal(runtimeStats().dispatches, dispatches + 0, "nothing reached the device");
});

Deno.test("a launch past maxComputeWorkgroupsPerDimension names the kernel and the limit before recording", async () => {
  const info = await gpu();
  const most = info.limits.maxComputeWorkgroupsPerDimension;
  const k = kernel({
    name: "limits_probe",
    bindings: [{ name: "out", type: "f32", access: "read_write" }],
    workgroupSize: [1],
    body: "  out[0] = 1.0;",
  });
  const t = mg.zeros([1]);
  const n = runtimeStats().dispatches;
  for (const groups of [[most + 1], [1, most + 1], [1, 1, most + 1], [1.5], [-1]] as const) {
    expectMgError(
      () => dispatch(k, [t.storage().buf], new Uint32Array(4), groups as [number]),
      '"limits_probe"',
      `maxComputeWorkgroupsPerDimension ${most}`,
    );
  }
  assert.equal(runtimeStats().dispatches, n, "no dispatch was recorded");
  dispatch(k, [t.storage().buf], new Uint32Array(4), [1]);
  assert.deepEqual(Array.from(await t.data()), [1], "the device still works");
  t.dispose();
  // An op whose grid has a batch axis refuses before allocating.
  const before = mg.memory();
  const g = mg.zeros([most + 1, 1, 1]);
  const mid = mg.memory();
  expectMgError(() => mg.optim.newtonSchulz(g), "moongrad.newtonSchulz:", `${most + 1} matrices`);
  assert.equal(mg.memory().liveTensors, mid.liveTensors);
  g.dispose();
  assert.equal(mg.memory().inUseBytes, before.inUseBytes);
});

Deno.test("element-count grids fold into 2-D: an op over more than 65535 × 256 elements is exact at both ends", async () => {
  await gpu();
  const n = 65535 * 256 + 777;
  const x = mg.full([n], 2);
  const y = x.mul(3);
  for (const at of [0, 65535 * 256 - 1, 65535 * 256, n - 1]) {
    const v = y.slice(0, at, at + 1);
    assert.deepEqual(Array.from(await v.data()), [6], `element ${at}`);
    v.dispose();
  }
  const s = y.slice(0, n - 300).sum();
  assert.equal(await s.item(), 6 * 300, "sum of the last 300, all past the 1-D grid limit");
  for (const t of [x, y, s]) t.dispose();
});
