/**
 * Co-launch (core/colaunch.ts): two independent dispatches of pairable kernels recorded as one
 * launch. Each case runs with co-launching on and off: the results must be bit-identical (each
 * output element is computed by the same code), and the launch counts must show the merge only
 * where the two dispatches are independent.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { dispatch, runtimeStats, setCoLaunch } from "../core/runtime.ts";
import { kernel } from "../core/kernel.ts";
import { compactParams, params } from "../core/params.ts";
import { ropeTail } from "../ops/rope_mla.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import { f32Bits as bits, microConfig, seededTensor as consts } from "./util.ts";

await mg.init();

/**
 * Runs `fn` (which records work and returns tensors) with co-launching on and off; returns
 * each run's launches, merged pairs and the results' bits.
 */
async function onOff(fn: () => mg.Tensor[]) {
  const run = async (on: boolean) => {
    const previous = setCoLaunch(on);
    try {
      await mg.sync();
      const s0 = runtimeStats();
      const outs = fn();
      const s1 = runtimeStats();
      const values = await Promise.all(outs.map((t) => t.data()));
      outs.forEach((t) => t.dispose());
      return {
        launches: s1.dispatches - s0.dispatches,
        merged: s1.coLaunched - s0.coLaunched,
        bits: values.map((v) => bits(v as Float32Array)),
      };
    } finally {
      setCoLaunch(previous);
    }
  };
  return { on: await run(true), off: await run(false) };
}

Deno.test("co-launch: two independent matmuls run as one launch, bit-identical", async () => {
  const a = consts([33, 20], 1), b = consts([20, 17], 2), c = consts([40, 33], 3);
  const r = await onOff(() => [a.matmul(b), c.matmul(a)]); // both read a: one shared binding
  assert.equal(r.off.launches, 2);
  assert.equal(r.on.launches, 1);
  assert.equal(r.on.merged, 1);
  assert.deepEqual(r.on.bits, r.off.bits);
  for (const t of [a, b, c]) t.dispose();
});

Deno.test("co-launch: a dispatch that reads the previous one's output is not merged", async () => {
  const a = consts([16, 16], 4), b = consts([16, 16], 5);
  const r = await onOff(() => {
    const p = a.matmul(b);
    const q = p.matmul(a); // reads p
    return [p, q];
  });
  assert.equal(r.on.launches, 2);
  assert.equal(r.on.merged, 0);
  assert.deepEqual(r.on.bits, r.off.bits);
  for (const t of [a, b]) t.dispose();
});

Deno.test("co-launch: kernels of different workgroup sizes are not merged", async () => {
  const a = consts([8, 64], 6), w = consts([64], 7);
  const r = await onOff(() => [rmsNorm(a, w, 1e-6), mg.max(a, 1)]);
  assert.equal(r.on.merged, 0);
  assert.deepEqual(r.on.bits, r.off.bits);
  for (const t of [a, w]) t.dispose();
});

Deno.test("co-launch: two RoPE kernels whose parameters need the wide block", async () => {
  // rope_cat's parameters fill most of a 64-word block; two compacted ones take the wide one.
  // (A given inverse-frequency table: a theta would upload one per call, between the two.)
  const q1 = consts([2, 3, 5, 12], 8), q2 = consts([2, 3, 7, 12], 9);
  const invFreq = mg.tensor([1, 0.01]);
  const r = await onOff(() => [ropeTail(q1, 8, 0, invFreq), ropeTail(q2, 8, 3, invFreq)]);
  assert.equal(r.off.launches, 2);
  assert.equal(r.on.launches, 1);
  assert.deepEqual(r.on.bits, r.off.bits);
  for (const t of [q1, q2, invFreq]) t.dispose();
});

Deno.test("co-launch: a held dispatch runs before an upload into a buffer it reads", async () => {
  const a = consts([8, 8], 10), b = consts([8, 8], 11);
  const want = await a.matmul(b).data();
  const p = a.matmul(b); // held: nothing else is recorded yet
  a.dispose();
  // The freed buffer is handed to a new tensor at once and written by an upload.
  const x = mg.tensor(new Float32Array(64).fill(7), { shape: [8, 8] });
  assert.deepEqual(bits(await p.data()), bits(want));
  assert.deepEqual(Array.from(await x.data()), new Array(64).fill(7));
  for (const t of [b, p, x]) t.dispose();
});

Deno.test("co-launch: a micro K2 loss and its gradients are bit-identical on and off", async () => {
  const config = microConfig();
  const model = new mg.nn.KimiLM(config, { seed: 3 });
  model.train();
  const ids = Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % config.vocab_size);
  const x = mg.tensor(ids, { shape: [2, 8], dtype: "i32" });
  const y = mg.tensor(ids.map((v) => (v + 5) % config.vocab_size), {
    shape: [2, 8],
    dtype: "i32",
  });
  const run = async (on: boolean) => {
    const previous = setCoLaunch(on);
    try {
      const s0 = runtimeStats();
      const loss = model.loss(x, y);
      loss.backward();
      const launches = runtimeStats().dispatches - s0.dispatches;
      const out = [bits(await loss.data())];
      for (const p of model.parameters()) out.push(bits(await p.grad!.data()));
      loss.dispose();
      model.zeroGrad();
      return { launches, out };
    } finally {
      setCoLaunch(previous);
    }
  };
  const off = await run(false);
  const on = await run(true);
  console.log(`micro K2 loss + backward: ${off.launches} launches off, ${on.launches} on`);
  assert.ok(on.launches < off.launches, `${on.launches} ≥ ${off.launches}`);
  assert.deepEqual(on.out, off.out);
  for (const t of [x, y]) t.dispose();
  model.dispose();
});

Deno.test("compactParams: arrays cut after their last non-zero word, reads past it are 0", () => {
  const P = params("k", { n: "u32", shape: ["u32", 20], eps: "f32", strides: ["i32", 9] });
  const packed = P.pack({ n: 7, shape: [2, 3], eps: 0.5, strides: [] });
  const c = compactParams(P, packed, 10, "_x")!;
  assert.deepEqual(c.words, [7, 2, 3, 0x3f000000, 0]);
  assert.equal(c.key, "2,1");
  assert.match(c.wgsl, /fn p_n_x\(\) -> u32 \{ return param_word\(10u\); \}/);
  assert.match(
    c.wgsl,
    /fn p_shape_x\(i: u32\) -> u32 \{ return select\(0u, param_word\(11u \+ min\(i, 1u\)\), i < 2u\); \}/,
  );
  assert.match(c.wgsl, /fn p_eps_x\(\) -> f32 \{ return bitcast<f32>\(param_word\(13u\)\); \}/);
  assert.equal(compactParams({ kernel: "x", words: 1, wgsl: "" }, packed, 0, ""), null);
});

Deno.test("co-launch: a buffer both read is shared only when declared alike and its name is free", async () => {
  const P = params("cl_probe", { n: "u32" });
  const probe = (name: string, type: string, body: string) =>
    kernel({
      name,
      pairable: true,
      bindings: [
        { name: type === "f32" ? "x" : "xv", type, access: "read" },
        { name: "out", type: "f32", access: "read_write" },
      ],
      workgroupSize: [64],
      params: P,
      body: `
  let i = wid.x * 64u + lidx;
  if (i >= p_n()) { return; }
  ${body}`,
    });
  const scalar = probe("cl_scalar", "f32", "out[i] = x[i] * 2.0;");
  const vec = probe("cl_vec4", "vec4<f32>", "out[i] = xv[i / 4u][i % 4u] + 1.0;");
  // Reads y's binding through a local named like the first kernel's binding.
  const shadow = kernel({
    name: "cl_shadow",
    pairable: true,
    bindings: [
      { name: "y", type: "f32", access: "read" },
      { name: "out", type: "f32", access: "read_write" },
    ],
    workgroupSize: [64],
    params: P,
    body: `
  let i = wid.x * 64u + lidx;
  if (i >= p_n()) { return; }
  let x = 3.0;
  out[i] = y[i] + x;`,
  });
  const src = consts([64], 20);
  const want = Array.from(await src.data());
  const previous = setCoLaunch(true);
  try {
    for (const second of [vec, shadow]) {
      const o1 = mg.zeros([64]), o2 = mg.zeros([64]);
      await mg.sync();
      const before = runtimeStats().coLaunched;
      const buf = (t: mg.Tensor) => t.storage("test").buf;
      dispatch(scalar, [buf(src), buf(o1)], P.pack({ n: 64 }), [1]);
      dispatch(second, [buf(src), buf(o2)], P.pack({ n: 64 }), [1]);
      const [a, b] = [Array.from(await o1.data()), Array.from(await o2.data())];
      assert.equal(runtimeStats().coLaunched - before, 0, second.name);
      assert.deepEqual(a, want.map((v) => Math.fround(v * 2)));
      const add = second === vec ? 1 : 3;
      assert.deepEqual(b, want.map((v) => Math.fround(v + add)), second.name);
      for (const t of [o1, o2]) t.dispose();
    }
  } finally {
    setCoLaunch(previous);
  }
  src.dispose();
});
