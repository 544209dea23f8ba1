/**
 * GPU errors name their cause: a kernel the WGSL compiler rejects is reported with its name,
 * where it was created and the compiler's message (and is never dispatched again); a
 * validation error inside a batch names the ops recorded in that batch; innocent ops before
 * and after are unaffected. Runs on whichever implementation the suite uses (wgpu or Dawn).
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { kernel, kernelDiagnostics, PARAM_WORDS } from "../core/kernel.ts";
import { dispatch } from "../core/runtime.ts";
import { standaloneBuffer } from "../core/pool.ts";
import { gpu } from "./util.ts";

async function rejection(p: () => Promise<unknown>): Promise<Error> {
  try {
    await p();
  } catch (e) {
    assert.ok(e instanceof mg.MoongradError, String(e));
    return e;
  }
  throw new Error("expected a rejection");
}

Deno.test("a kernel that does not compile is reported by name, op site and compiler message", async () => {
  await gpu();
  const x = mg.tensor([1, 2, 3]);
  const broken = kernel({
    name: "deliberately_broken",
    bindings: [{ name: "out", type: "f32", access: "read_write" }],
    workgroupSize: [64],
    body: "  out[gid.x] = no_such_function(1.0);",
  });
  const y = mg.zeros([4]);
  dispatch(broken, [y.storage("test").buf], new Uint32Array(PARAM_WORDS), [1]);
  const err = await rejection(() => y.data());
  assert.ok(err.message.includes('kernel "deliberately_broken"'), err.message);
  assert.ok(err.message.includes("gpu_errors_test.ts"), `names the creation site: ${err.message}`);
  assert.ok(/no_such_function/.test(err.message), `carries the compiler message: ${err.message}`);
  // Known broken now: refused synchronously at dispatch, before any GPU work is recorded.
  const e2 = (() => {
    try {
      dispatch(broken, [y.storage("test").buf], new Uint32Array(PARAM_WORDS), [1]);
    } catch (e) {
      return e as Error;
    }
    return null;
  })();
  assert.ok(e2 instanceof mg.MoongradError && e2.message.includes("failed to compile"), String(e2));
  const d = kernelDiagnostics().filter((k) => k.kernel === "deliberately_broken");
  assert.ok(d.length > 0 && d[0].type === "error", JSON.stringify(d));
  // The next, innocent op neither inherits the error nor fails.
  assert.deepEqual(Array.from(await x.add(x).data()), [2, 4, 6]);
  y.dispose();
  x.dispose();
});

Deno.test("a validation error inside a batch names the ops of that batch", async () => {
  const info = await gpu();
  const a = mg.tensor([1, 2, 3]);
  const b = a.mul(a); // an innocent op in the same batch
  const k = kernel({
    name: "uses_destroyed_buffer",
    bindings: [{ name: "out", type: "f32", access: "read_write" }],
    workgroupSize: [1],
    body: "  if (gid.x == 0u) { out[0] = 1.0; }",
  });
  const y = mg.zeros([1]);
  // Past the grid limit is refused on the host now (core/limits.ts), before the batch sees it.
  const tooMany = info.limits.maxComputeWorkgroupsPerDimension + 1;
  assert.throws(
    () => dispatch(k, [y.storage("test").buf], new Uint32Array(PARAM_WORDS), [tooMany]),
    /uses_destroyed_buffer.*maxComputeWorkgroupsPerDimension/,
  );
  // A destroyed buffer is a validation error only the device finds, when the batch is submitted.
  const dead = standaloneBuffer("test: destroyed", 256);
  dead.buffer.destroy();
  dispatch(k, [dead], new Uint32Array(PARAM_WORDS), [1]);
  const err = await rejection(() => y.data());
  assert.ok(err.message.includes("uses_destroyed_buffer"), err.message);
  assert.ok(/ops: .*mul/.test(err.message), `names the batch's other ops: ${err.message}`);
  assert.deepEqual(Array.from(await a.add(a).data()), [2, 4, 6]);
  for (const t of [a, b, y]) t.dispose();
});
