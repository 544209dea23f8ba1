import * as mg from "../mod.ts";
import { kernel, PARAM_WORDS } from "../core/kernel.ts";
import { params } from "../core/params.ts";
import { dispatch, runtimeStats } from "../core/runtime.ts";
import { assertClose, gpu, seededValues } from "./util.ts";
import assert from "node:assert/strict";

/** One u32 parameter, `n`, for the hand-written test kernels. */
const N = params("test_kernel", { n: "u32" });

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
  dispatch(k, [t.storage().buf], new Uint32Array(PARAM_WORDS), [1]);
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

// ---- slabs, dynamic offsets, bind groups and submits (core/pool.ts, core/runtime.ts) ----

Deno.test("tensors of one size class are sub-buffers of one slab; writing one while recorded work reads another needs no flush", async () => {
  await gpu();
  await mg.sync();
  const n = 3000; // 12,000 bytes: class 12,288, 21 sub-buffers per slab
  const first = seededValues(n, 21);
  const second = seededValues(n, 22, 50, 60);
  const a = mg.tensor(first);
  const b = a.exp(); // recorded, not submitted
  const submits = runtimeStats().submits;
  const c = mg.tensor(second); // another sub-buffer of a's slab, written by queue.writeBuffer
  const [ab, cb] = [a.storage().buf, c.storage().buf];
  assert.equal(cb.buffer, ab.buffer, "the test must put both tensors in one slab");
  assert.notEqual(cb.offset, ab.offset);
  assert.equal(cb.offset % 256, 0, "sub-buffer offsets are multiples of 256");
  assert.equal(runtimeStats().submits, submits, "a write to another sub-buffer does not flush");
  assertClose(await b.data(), first.map(Math.exp), { rtol: 1e-6, atol: 0 }, "exp(a)");
  assertClose(await c.data(), second, { rtol: 0, atol: 0 }, "c");
  for (const t of [a, b, c]) t.dispose();
});

Deno.test("a kernel's writes through a dynamic offset of a new slab survive into later submits", async () => {
  await gpu();
  // 200,003 floats: class 917,504 bytes, a class no other test here uses, so its slab is new
  // and y sits at a non-zero offset (wgpu tracks lazy zeroing per bound range, ignoring
  // dynamic offsets: the pool zero-fills new slabs, else y would read back as zeros).
  const n = 200_003;
  const x = mg.full([n], 3);
  const y = x.add(1);
  assert.equal(y.storage().buf.buffer, x.storage().buf.buffer);
  assert.ok(y.storage().buf.offset > 0);
  await mg.sync(); // the dispatches are submitted; the readback below is a later submit
  const got = await y.data();
  assert.ok(got.every((v) => v === 4), `y: ${got.slice(0, 4)} … (expected 4)`);
  x.dispose();
  y.dispose();
});

Deno.test("memory() counts whole slabs; emptyCache() destroys the slabs no tensor uses", async () => {
  await gpu();
  const { slabStats, sizeClass, slabCapacity } = await import("../core/pool.ts");
  const bytes = 5_000_000; // class 5,242,880: a class no other test here uses
  const cls = sizeClass(bytes);
  assert.equal(cls % 256, 0);
  const m0 = mg.memory();
  const t = mg.zeros([bytes / 4]);
  const m1 = mg.memory();
  const slab = slabStats().filter((s) => s.classSize === cls);
  assert.equal(slab.length, 1);
  const cap = slabCapacity(cls, 0, (await gpu()).limits.maxBufferSize);
  assert.equal(slab[0].capacity, cap);
  assert.equal(m1.allocatedBytes - m0.allocatedBytes, cls * cap, "a new slab: class × capacity");
  assert.equal(m1.inUseBytes - m0.inUseBytes, cls, "one sub-buffer in use");
  assert.equal(m1.pooledBytes, m1.allocatedBytes - m1.inUseBytes);
  t.dispose();
  assert.equal(mg.memory().inUseBytes, m0.inUseBytes);
  mg.emptyCache();
  assert.equal(slabStats().filter((s) => s.classSize === cls).length, 0, "empty slab destroyed");
  assert.ok(mg.memory().allocatedBytes <= m1.allocatedBytes - cls * cap);
  assert.ok(slabStats().every((s) => s.inUse > 0), "only slabs in use survive emptyCache");
});

Deno.test("bind groups are keyed by slab: tensors of one class recycled in random order need one bind group per kernel", async () => {
  await gpu();
  // Eight live tensors of one size class (one slab); each step multiplies two picked at
  // random and replaces a third, so the kernels see ever-changing buffers. Keyed by buffer
  // (bd4de6b) the first pass made 21 bind groups for 81 dispatches; keyed by slab, each of
  // mul, sigmoid and sum needs one, and later passes none.
  let seed = 5;
  const pick = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % 8;
  const ring = Array.from({ length: 8 }, (_, i) => mg.full([40, 9], i / 8));
  await mg.sync();
  const pass = async () => {
    for (let i = 0; i < 40; i++) {
      const m = ring[pick()].mul(ring[pick()]);
      const t = m.sigmoid();
      m.dispose();
      const k = pick();
      ring[k].dispose();
      ring[k] = t;
    }
    using s = ring[0].sum();
    await s.item();
  };
  const start = runtimeStats();
  await pass();
  const first = runtimeStats();
  for (let i = 0; i < 5; i++) await pass();
  const after = runtimeStats();
  assert.ok(after.dispatches - start.dispatches >= 480);
  assert.ok(first.bindGroupsCreated - start.bindGroupsCreated <= 3, "one per kernel");
  assert.equal(after.bindGroupsCreated, first.bindGroupsCreated, "none after the first pass");
  for (const t of ring) t.dispose();
});

Deno.test("readbacks recorded in one task share one submit, and work recorded before them is in it", async () => {
  await gpu();
  const ts = [1, 2, 3, 4, 5].map((v) => mg.full([7], v));
  await mg.sync();
  const before = runtimeStats().submits;
  const doubled = ts.map((t) => t.mul(2));
  const values = await Promise.all(doubled.map((t) => t.data()));
  assert.equal(runtimeStats().submits, before + 1, "one submit for five readbacks");
  values.forEach((v, i) => assert.deepEqual(Array.from(v), new Array(7).fill(2 * (i + 1))));
  // Again: the staging buffers come back from the pool.
  const again = await Promise.all(doubled.map((t) => t.sum().item()));
  assert.deepEqual(again, [14, 28, 42, 56, 70]);
  for (const t of [...ts, ...doubled]) t.dispose();
});

Deno.test("one sub-buffer passed to two bindings: read twice works (one scratch copy); written twice is an error", async () => {
  await gpu();
  const x = mg.tensor([1, 2, 3, 4, 5]);
  const before = runtimeStats().aliasCopies;
  assert.deepEqual(Array.from(await x.mul(x).data()), [1, 4, 9, 16, 25]);
  assert.equal(runtimeStats().aliasCopies, before, "pointwise binds one tensor once");
  const k = kernel({
    name: "alias_sum",
    bindings: [
      { name: "a", type: "f32", access: "read" },
      { name: "b", type: "f32", access: "read" },
      { name: "o", type: "f32", access: "read_write" },
    ],
    workgroupSize: [64],
    params: N,
    body: "let i = gid.x; if (i < p_n()) { o[i] = a[i] + 2.0 * b[i]; }",
  });
  const out = mg.zeros([5]);
  const xb = x.storage().buf;
  dispatch(k, [xb, xb, out.storage().buf], N.pack({ n: 5 }), [1]);
  assert.equal(runtimeStats().aliasCopies, before + 1, "the repeat gets a scratch copy");
  assert.deepEqual(Array.from(await out.data()), [3, 6, 9, 12, 15]);
  const w = kernel({
    name: "alias_write_twice",
    bindings: [
      { name: "a", type: "f32", access: "read_write" },
      { name: "b", type: "f32", access: "read_write" },
    ],
    workgroupSize: [64],
    params: N,
    body: "let i = gid.x; if (i < p_n()) { a[i] = 1.0; b[i] = 2.0; }",
  });
  assert.throws(
    () => dispatch(w, [xb, xb], N.pack({ n: 5 }), [1]),
    /alias_write_twice.*bindings 0 and 1 are the same tensor storage and both are written/,
  );
  x.dispose();
  out.dispose();
});

Deno.test("kernels with more storage bindings than maxDynamicStorageBuffersPerPipelineLayout bind the rest by range", async () => {
  const info = await gpu();
  const limit = info.limits.maxDynamicStorageBuffersPerPipelineLayout;
  assert.ok(limit >= 4, `limit ${limit}`);
  const count = Math.min(info.limits.maxStorageBuffersPerShaderStage, limit + 2, 10);
  const names = Array.from({ length: count - 1 }, (_, i) => `in${i}`);
  const k = kernel({
    name: "many_bindings",
    bindings: [
      ...names.map((name) => ({ name, type: "f32", access: "read" as const })),
      { name: "o", type: "f32", access: "read_write" },
    ],
    workgroupSize: [64],
    params: N,
    body: `let i = gid.x; if (i < p_n()) { o[i] = ${names.map((n) => `${n}[i]`).join(" + ")}; }`,
  });
  assert.equal(k.dynamicCount, Math.min(count, limit));
  const ins = names.map((_, j) => mg.full([9], j + 1));
  const out = mg.zeros([9]);
  for (let rep = 0; rep < 2; rep++) {
    dispatch(k, [...ins.map((t) => t.storage().buf), out.storage().buf], N.pack({ n: 9 }), [
      1,
    ]);
  }
  const sum = ((count - 1) * count) / 2;
  assert.deepEqual(Array.from(await out.data()), new Array(9).fill(sum));
  for (const t of [...ins, out]) t.dispose();
});

Deno.test("parameter word 63 is reserved (every parameter read goes through it, so lavapipe cannot inline uniforms); positional reads are refused", async () => {
  await gpu();
  const { kernelSource, PARAM_ZERO_WORD } = await import("../core/kernel.ts");
  assert.equal(PARAM_ZERO_WORD, 63);
  const P = params("reserved_word", { words: ["u32", 63] });
  const src = kernelSource({ name: "k", bindings: [], workgroupSize: [1], body: "", params: P });
  assert.match(src, /fn param_word\(i: u32\) -> u32 \{ let j = i \+ params\.w\[15\]\[3\];/);
  assert.throws(() => params("k", { words: ["u32", 64] }), /64 words.*holds 63/);
  const k = kernel({
    name: "reserved_word",
    bindings: [{ name: "o", type: "u32", access: "read_write" }],
    workgroupSize: [1],
    params: P,
    body: "o[0] = p_words(62u) + p_words(0u);",
  });
  const out = mg.zeros([1], { dtype: "i32" });
  const words = new Uint32Array(64);
  words[63] = 1;
  assert.throws(() => dispatch(k, [out.storage().buf], words, [1]), /word 63 is reserved/);
  dispatch(k, [out.storage().buf], P.pack({ words: new Array(63).fill(7) }), [1]);
  assert.deepEqual(Array.from(await out.data()), [14]);
  out.dispose();
  for (const body of ["o[0] = prm(0u);", "o[0] = param_word(0u);", "o[0] = params.w[0][0];"]) {
    assert.throws(
      () =>
        kernel({
          name: "positional",
          bindings: [{ name: "o", type: "u32", access: "read_write" }],
          workgroupSize: [1],
          body,
        }),
      /moongrad\.positional: kernel reads parameters positionally/,
    );
  }
});
