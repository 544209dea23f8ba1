import * as mg from "../mod.ts";
import { kernel, Params } from "../core/kernel.ts";
import { dispatch, runtimeStats } from "../core/runtime.ts";
import { assertClose, gpu, seededValues } from "./util.ts";
import assert from "node:assert/strict";

Deno.test("a buffer freed and reused inside one batch is not overwritten before recorded work reads it", async () => {
  await gpu();
  await mg.sync();
  const n = 4096;
  const first = seededValues(n, 11);
  const second = seededValues(n, 12, 50, 60);
  const a = mg.tensor(first);
  const bufId = a.storage().buf.id;
  const b = a.exp(); // recorded, not submitted
  a.dispose(); // a's buffer returns to the pool while exp(a) is still unsubmitted
  const c = mg.tensor(second); // same size class: takes a's buffer and uploads into it
  assert.equal(c.storage().buf.id, bufId, "the test must exercise buffer reuse");
  assertClose(await b.data(), first.map(Math.exp), { rtol: 1e-6, atol: 0 }, "exp(a)");
  assertClose(await c.data(), second, { rtol: 0, atol: 0 }, "c");
  b.dispose();
  c.dispose();
});

Deno.test("dispatches are batched: many ops, few submits, one await", async () => {
  await gpu();
  await mg.sync();
  const before = runtimeStats();
  let x = mg.ones([64]);
  for (let i = 0; i < 100; i++) {
    const y = x.add(1);
    x.dispose();
    x = y;
  }
  const mid = runtimeStats();
  assert.equal(mid.submits, before.submits, "no submit before readback for 101 dispatches");
  assert.equal(await x.sum().item(), 64 * 101);
  assert.equal(runtimeStats().submits, before.submits + 1);
  x.dispose();
});

Deno.test("kernels are compiled once per source and shapes travel as parameters", async () => {
  await gpu();
  const { compiledKernelCount } = await import("../core/kernel.ts");
  const warm = mg.ones([3, 5]).mul(2);
  await warm.data();
  const count = compiledKernelCount();
  for (const shape of [[7], [2, 9], [4, 1, 3], [100, 3]]) {
    const t = mg.ones(shape).mul(2);
    await t.data();
    t.dispose();
  }
  assert.equal(compiledKernelCount(), count, "new shapes of the same op compile nothing");
  warm.dispose();
});

Deno.test("a GPU validation error surfaces as a JS error naming the op", async () => {
  await gpu();
  const k = kernel({
    name: "deliberately_broken",
    bindings: [{ name: "out", type: "f32", access: "read_write" }],
    workgroupSize: [1],
    body: "out[0] = undefined_symbol;",
  });
  const t = mg.zeros([4]);
  dispatch(k, [t.storage().buf], new Params().words, [1]);
  await assert.rejects(() => t.data(), /deliberately_broken/);
  t.dispose();
});

Deno.test("using and dispose free memory; use after dispose is a clear error", async () => {
  await gpu();
  const start = mg.memory().inUseBytes;
  {
    using t = mg.ones([1000]);
    assert.ok(mg.memory().inUseBytes > start);
    assert.equal(t.size, 1000);
  }
  assert.equal(mg.memory().inUseBytes, start);
  const t = mg.zeros([2, 3]);
  t.dispose();
  t.dispose(); // idempotent
  assert.throws(() => t.add(1), /disposed/);
  await assert.rejects(() => t.data(), /moongrad\.data: tensor \[2, 3\] f32 was disposed/);
});

Deno.test("500 create/dispose iterations and 500 scopes leave in-use bytes unchanged", async () => {
  await gpu();
  const start = mg.memory();
  for (let i = 0; i < 500; i++) {
    const a = mg.randn([17, 5], { seed: i });
    const sq = a.mul(a);
    const shifted = sq.add(1);
    const b = shifted.sum(1);
    for (const t of [a, sq, shifted, b]) t.dispose();
  }
  for (let i = 0; i < 500; i++) {
    mg.scope(() => mg.randn([33]).exp().sub(1).mean()).dispose();
  }
  const kept = mg.scope(() => {
    const x = mg.ones([8]);
    return { y: x.mul(3), list: [x.add(1)] };
  });
  assert.deepEqual(await kept.y.toArray(), new Array(8).fill(3));
  kept.y.dispose();
  kept.list[0].dispose();
  const end = mg.memory();
  assert.equal(end.inUseBytes, start.inUseBytes);
  assert.equal(end.liveTensors, start.liveTensors);
  assert.ok(end.pooledBytes > 0, "freed buffers are pooled for reuse");
});

Deno.test("views share storage: reshape/transpose/slice/expand copy nothing", async () => {
  await gpu();
  const x = mg.arange(12).reshape([3, 4]);
  const before = mg.memory().inUseBytes;
  const views = [
    x.transpose(),
    x.slice(1, 1, 3),
    x.reshape([4, 3]),
    x.slice(0, 0, 1).expand([5, 4]),
  ];
  assert.equal(mg.memory().inUseBytes, before);
  assert.deepEqual(await views[0].toArray(), [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]);
  assert.deepEqual(await views[1].toArray(), [[1, 2], [5, 6], [9, 10]]);
  for (const v of views) v.dispose();
  x.dispose();
});

Deno.test("without init, creating a tensor says to call init (subprocess)", async () => {
  const code = `import * as mg from "${new URL("../mod.ts", import.meta.url).href}";
try { mg.ones([2]); } catch (e) { console.log(String(e)); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { XDG_RUNTIME_DIR: "/tmp" },
  }).output();
  assert.match(new TextDecoder().decode(out.stdout), /call `await mg.init\(\)`/);
});

Deno.test("no adapter: init fails with one error saying how to get one (subprocess)", async () => {
  const code = `import * as mg from "${new URL("../mod.ts", import.meta.url).href}";
try { await mg.init(); console.log("adapter found"); } catch (e) { console.log(String(e)); }`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    // dx12 does not exist on Linux, so Deno finds no adapter at all.
    env: { XDG_RUNTIME_DIR: "/tmp", DENO_WEBGPU_BACKEND: "dx12" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /no WebGPU adapter found.*mesa-vulkan-drivers/);
});

Deno.test("adapter vendors are names, not Vulkan/PCI ids", async () => {
  const info = await gpu();
  const { vendorName } = await import("../core/device.ts");
  assert.equal(vendorName("65541"), "Mesa");
  assert.equal(vendorName("4318"), "NVIDIA");
  assert.equal(vendorName("0x8086"), "Intel");
  assert.equal(vendorName("apple"), "apple");
  assert.ok(!/^\d+$/.test(info.vendor), `vendor reported as a number: ${info.vendor}`);
  assert.ok(info.description && info.description !== "unknown adapter", info.description);
});
