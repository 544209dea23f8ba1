/**
 * The GPU range check of indices (ops/check_indices.ts): on random index tensors (contiguous
 * and strided views, values in [-n-1, n]) the next readback throws exactly when a value is
 * out of range, naming the op, the argument, the first flat position, the count and the
 * smallest and largest offending values, all compared with a JS scan; the ignore index stays
 * valid; more checks than flag slots between two readbacks are all reported; sync() reports
 * too; a failure is reported once; the check costs one dispatch and no pool memory; and
 * `setCheckIndices(false)` restores the unchecked behaviour.
 */
import * as mg from "../mod.ts";
import assert from "node:assert/strict";
import { check, expectMgError, fc, gpu } from "./util.ts";
import { resetRuntimeStats, runtimeStats, setCoLaunch } from "../core/runtime.ts";
import { moePlan } from "../ops/moe.ts";

/** The MoongradError a promise rejects with (fails when it resolves or throws another kind). */
async function rejection(p: Promise<unknown>): Promise<mg.MoongradError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof mg.MoongradError) return e;
    throw e;
  }
  throw new Error("expected a MoongradError, the readback succeeded");
}

Deno.test("a readback after gather/indexSelect throws exactly when an index is out of range, naming position, count and values", async () => {
  await gpu();
  await check(
    fc.tuple(
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.integer({ min: -7, max: 6 }), { minLength: 1, maxLength: 12 }),
      fc.boolean(),
      fc.boolean(),
    ),
    async ([n, raw, strided, useGather]) => {
      const values = raw.map((v) => Math.max(-n - 1, Math.min(n, v)));
      const x = mg.arange(n);
      // A strided view: every other entry of a longer tensor whose other entries are wild.
      const full = mg.tensor(Int32Array.from(values.flatMap((v) => [v, 99])), { dtype: "i32" });
      const index = strided
        ? full.slice(0, 0, undefined, 2)
        : mg.tensor(Int32Array.from(values), { dtype: "i32" });
      const before = mg.memory();
      const y = useGather ? mg.gather(x, 0, index) : mg.indexSelect(x, 0, index);
      const bad = values.map((v, i) => [v, i]).filter(([v]) => v < -n || v >= n);
      const op = useGather ? "gather" : "indexSelect";
      if (!bad.length) {
        assert.deepEqual(Array.from(await y.data()), values.map((v) => (v + n) % n));
      } else {
        const e = await rejection(y.data());
        const vals = bad.map(([v]) => v);
        const want = bad.length === 1
          ? `moongrad.${op}: index holds ${vals[0]} at flat position ${bad[0][1]} of index ` +
            `[${values.length}]; the allowed range is [${-n}, ${n})`
          : `moongrad.${op}: index holds ${bad.length} values outside the allowed range ` +
            `[${-n}, ${n}): the first at flat position ${bad[0][1]} of index ` +
            `[${values.length}], the smallest ${Math.min(...vals)}, the largest ${
              Math.max(...vals)
            }`;
        assert.ok(e.message.startsWith(want), `${e.message}\n  expected: ${want}`);
        // Reported once: the next readback is clean.
        assert.deepEqual(Array.from(await x.data()), [...Array(n).keys()]);
      }
      y.dispose();
      assert.equal(mg.memory().inUseBytes, before.inUseBytes, "the check uses no pool memory");
      for (const t of [x, full, index]) t.dispose();
    },
    25,
  );
});

Deno.test("scatterAdd, indexAdd, embedding, crossEntropy and moePlan are checked; the ignore index is allowed", async () => {
  await gpu();
  const cases: [string, () => mg.Tensor, string][] = [
    ["scatterAdd", () => mg.scatterAdd(mg.zeros([4]), 0, i32([1, 4]), mg.ones([2])), "[-4, 4)"],
    ["indexAdd", () => mg.indexAdd(mg.zeros([4]), 0, i32([-5]), mg.ones([1])), "[-4, 4)"],
    ["embedding", () => mg.embedding(mg.zeros([4, 2]), i32([[0, -1]])), "ids holds -1"],
    [
      "crossEntropy",
      () => mg.crossEntropy(mg.zeros([2, 3]), i32([3, -100])),
      "targets holds 3 at flat position 0 of targets [2]; the allowed range is [0, 3) or -100",
    ],
  ];
  for (const [op, run, part] of cases) {
    const y = mg.scope(run);
    const e = await rejection(y.data());
    assert.ok(e.message.startsWith(`moongrad.${op}:`) && e.message.includes(part), e.message);
    y.dispose();
  }
  const ok = mg.scope(() => mg.crossEntropy(mg.zeros([2, 3]), i32([2, -100])));
  assert.ok(Math.abs(await ok.item() - Math.log(3)) < 1e-6, "ignored targets pass the check");
  ok.dispose();
  const idx = i32([[0, 4]]);
  const plan = moePlan(idx, 4);
  const e = await rejection(plan.counts.data());
  assert.ok(e.message.startsWith("moongrad.moePlan: indices holds 4"), e.message);
  for (const t of [idx, plan.counts, plan.offsets, plan.perm, plan.inv]) t.dispose();
});

Deno.test("more checks than flag slots before a readback: every failure is still reported", async () => {
  await gpu();
  const x = mg.arange(3);
  const good = i32([0, 1, 2]);
  const outs: mg.Tensor[] = [];
  for (let i = 0; i < 2100; i++) {
    const index = i === 7 ? i32([3]) : i === 1500 ? i32([-9]) : good;
    outs.push(mg.gather(x, 0, index));
    if (index !== good) index.dispose();
  }
  const e = await rejection(outs[0].data());
  assert.ok(e.message.startsWith("moongrad.gather: index holds 3 at flat position 0"), e.message);
  assert.ok(e.message.includes("and 1 more failed check(s): index holds -9"), e.message);
  for (const t of [x, good, ...outs]) t.dispose();
});

Deno.test("sync() reports a failed check; the check is one dispatch; setCheckIndices(false) turns it off", async () => {
  await gpu();
  const x = mg.arange(3);
  const bad = i32([5]);
  const y = mg.gather(x, 0, bad);
  const e = await rejection(mg.sync());
  assert.ok(e.message.startsWith("moongrad.gather: index holds 5"), e.message);
  y.dispose();
  const was = mg.setCheckIndices(false);
  assert.equal(was, true, "on by default");
  // Counted as launches of their own: co-launching (core/colaunch.ts) would merge the check
  // with the gather.
  const coLaunch = setCoLaunch(false);
  try {
    resetRuntimeStats();
    const off = mg.gather(x, 0, bad);
    const offDispatches = runtimeStats().dispatches;
    assert.deepEqual(Array.from(await off.data()), [0], "unchecked: an out-of-range read gives 0");
    off.dispose();
    mg.setCheckIndices(true);
    resetRuntimeStats();
    const on = mg.gather(x, 0, i32s(x));
    assert.equal(runtimeStats().dispatches, offDispatches + 1, "one check dispatch");
    on.dispose();
  } finally {
    mg.setCheckIndices(was);
    setCoLaunch(coLaunch);
  }
  expectMgError(() => mg.setCheckIndices("yes" as never), "setCheckIndices", "true or false");
  for (const t of [x, bad]) t.dispose();
});

Deno.test("a sync or readback with a verdict to read waits once, not twice", async () => {
  // The verdict's buffers are mapped while the queue is awaited (core/runtime.ts `sync`).
  // Deno's WebGPU pays ~10 ms after each wait (an idle sync); one after the other, a sync with
  // a verdict cost two. Elsewhere an idle sync is short and there is nothing to compare.
  await gpu();
  const x = mg.arange(3);
  const ok = i32s(x);
  const minOf = async (fn: () => Promise<unknown>) => {
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await fn();
      best = Math.min(best, performance.now() - t);
    }
    return best;
  };
  await mg.sync();
  const idle = await minOf(() => mg.sync());
  const checked = await minOf(() => {
    mg.gather(x, 0, ok).dispose();
    return mg.sync();
  });
  const read = await minOf(async () => {
    const y = mg.gather(x, 0, ok);
    await y.data();
    y.dispose();
  });
  if (idle >= 5) {
    assert.ok(checked < 1.5 * idle + 2, `sync with a verdict ${checked} ms, idle ${idle} ms`);
    assert.ok(read < 1.5 * idle + 2, `readback with a verdict ${read} ms, idle sync ${idle} ms`);
  }
  x.dispose();
});

const held: mg.Tensor[] = [];
function i32(v: number[] | number[][]): mg.Tensor {
  return mg.tensor(v, { dtype: "i32" });
}
/** A valid index for x, kept until the end of the file. */
function i32s(x: mg.Tensor): mg.Tensor {
  const t = i32([x.size - 1]);
  held.push(t);
  return t;
}
Deno.test("check_indices: helpers freed", () => {
  for (const t of held.splice(0)) t.dispose();
});
