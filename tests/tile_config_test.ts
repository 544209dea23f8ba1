/**
 * The two tile-configuration setters keep one contract: `setMatmulConfig` and
 * `setAttentionConfig` take a configuration or null (null restores the adapter default),
 * return the previous override or null, copy what they are given, and reject a configuration
 * that breaks a limit with a MoongradError naming the setter and the limit, changing nothing.
 * The same scripted sequence runs through both and must give the same trace.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { CPU_MATMUL_CONFIG, GPU_MATMUL_CONFIG } from "../ops/matmul.ts";
import { CPU_ATTENTION_CONFIG, DEFAULT_ATTENTION_CONFIG } from "../ops/attention.ts";
import { gpu } from "./util.ts";

const info = await gpu();

interface Setter<C> {
  name: string;
  get(): C;
  set(next: C | null): C | null;
  defaultConfig: C;
  a: C;
  b: C;
  /** Invalid configurations and a pattern their error message must match (the limit). */
  invalid: [C, RegExp][];
}

const matmul: Setter<mg.MatmulConfig> = {
  name: "setMatmulConfig",
  get: mg.matmulConfig,
  set: mg.setMatmulConfig,
  defaultConfig: info.isFallbackAdapter ? CPU_MATMUL_CONFIG : GPU_MATMUL_CONFIG,
  a: { wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 8, shared: true, vec4: true },
  b: { wgX: 4, wgY: 4, tm: 2, tn: 2, bk: 4, shared: false, vec4: false },
  invalid: [
    [{ ...GPU_MATMUL_CONFIG, wgX: 64, wgY: 64 }, /maxComputeInvocationsPerWorkgroup \d+/],
    [{ ...GPU_MATMUL_CONFIG, tm: 3 }, /multiples of 4, got 3 and 4/],
    [{ ...GPU_MATMUL_CONFIG, bk: 0 }, /bk must be a positive integer, got 0/],
    [{ ...GPU_MATMUL_CONFIG, wgX: 16, wgY: 16, tm: 16, tn: 16, bk: 64 }, /the device allows \d+/],
  ],
};

const attention: Setter<mg.AttentionConfig> = {
  name: "setAttentionConfig",
  get: mg.attentionConfig,
  set: mg.setAttentionConfig,
  defaultConfig: info.isFallbackAdapter ? CPU_ATTENTION_CONFIG : DEFAULT_ATTENTION_CONFIG,
  a: { rows: 8, lanes: 8 },
  b: { rows: 32, lanes: 4, direct: true },
  invalid: [
    [{ rows: 32, lanes: 16 }, /rows·lanes = 512 threads exceeds the limit 256/],
    [{ rows: 4, lanes: 6 }, /lanes must be a multiple of 4, got 6/],
    [{ rows: 512, lanes: 4, direct: true }, /the limit is 256/],
    [{ rows: 0.5, lanes: 4 }, /rows must be a positive integer, got 0.5/],
  ],
};

/** Runs the contract on one setter; returns a trace of what it returned and held. */
function roundTrip<C>(s: Setter<C>): string[] {
  const trace: string[] = [];
  const kind = (v: C | null) => v === null ? "null" : "override";
  const start = s.set(null);
  try {
    assert.deepEqual(s.get(), { ...s.defaultConfig }, `${s.name}(null) restores the default`);
    const given = { ...s.a };
    trace.push(`set a → ${kind(s.set(given))}`);
    (given as Record<string, unknown>).rows = -1; // the setter copied it
    (given as Record<string, unknown>).wgX = -1;
    assert.deepEqual(s.get(), s.a, `${s.name} keeps a copy`);
    const got = s.get();
    (got as Record<string, unknown>).rows = -2; // the getter returns a copy
    (got as Record<string, unknown>).wgX = -2;
    assert.deepEqual(s.get(), s.a);
    const prevA = s.set(s.b);
    trace.push(`set b → ${kind(prevA)}`);
    assert.deepEqual(prevA, s.a, `${s.name} returns the previous override`);
    for (const [bad, limit] of s.invalid) {
      assert.throws(
        () => s.set(bad),
        (e: Error) =>
          e instanceof mg.MoongradError && e.message.includes(s.name) &&
          e.message.includes("invalid tile config") && limit.test(e.message),
        `${s.name}(${JSON.stringify(bad)}) must name the limit ${limit}`,
      );
      assert.deepEqual(s.get(), s.b, `a rejected ${s.name} changes nothing`);
    }
    trace.push("invalid → throws, unchanged");
    assert.throws(() => s.set(undefined as unknown as C), /expected a tile configuration/);
    const prevB = s.set(prevA);
    trace.push(`restore a → ${kind(prevB)}`);
    assert.deepEqual(prevB, s.b);
    assert.deepEqual(s.get(), s.a);
    trace.push(`reset → ${kind(s.set(null))}`);
    trace.push(`reset again → ${kind(s.set(null))}`);
    assert.deepEqual(s.get(), { ...s.defaultConfig });
  } finally {
    s.set(start);
  }
  return trace;
}

Deno.test("setMatmulConfig and setAttentionConfig round-trip identically (null resets, previous override returned)", () => {
  const m = roundTrip(matmul);
  const a = roundTrip(attention);
  assert.deepEqual(m, [
    "set a → null",
    "set b → override",
    "invalid → throws, unchanged",
    "restore a → override",
    "reset → override",
    "reset again → null",
  ]);
  assert.deepEqual(a, m);
});

Deno.test("a configuration set through either setter is the one the kernels run with", async () => {
  const x = mg.randn([2, 2, 8, 16], { seed: 1 });
  const reference = await mg.attention(x, x, x).out.data();
  const mmRef = await x.matmul(x.transpose()).data();
  const prevA = mg.setAttentionConfig(attention.b);
  const prevM = mg.setMatmulConfig(matmul.b);
  try {
    assert.deepEqual(mg.attentionConfig(), attention.b);
    const out = await mg.attention(x, x, x).out.data();
    const mm = await x.matmul(x.transpose()).data();
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - reference[i]) < 1e-5);
    for (let i = 0; i < mm.length; i++) assert.ok(Math.abs(mm[i] - mmRef[i]) < 1e-4);
  } finally {
    assert.deepEqual(mg.setAttentionConfig(prevA), attention.b);
    assert.deepEqual(mg.setMatmulConfig(prevM), matmul.b);
  }
});
