/**
 * core/random.ts: the one seeded generator (mulberry32) the library, the CLI and the tests
 * share. Checked draw for draw against an independent BigInt formulation of mulberry32, the
 * function form against the class, and checkpoint/resume through `state`.
 */
import assert from "node:assert/strict";
import { mulberry32, Rng } from "../core/random.ts";
import { Rng as CliRng } from "../cli/data.ts";
import { rng as referenceRng } from "./reference/linalg.ts";

const M32 = (1n << 32n) - 1n;

/** mulberry32 in BigInt arithmetic (mod 2³² by masking), written from the published steps. */
function* bigintMulberry32(seed: number): Generator<number> {
  let state = BigInt(seed >>> 0);
  const mul = (a: bigint, b: bigint) => (a * b) & M32;
  while (true) {
    state = (state + 0x6d2b79f5n) & M32;
    let t = state;
    t = mul(t ^ (t >> 15n), t | 1n);
    t = (t ^ ((t + mul(t ^ (t >> 7n), t | 61n)) & M32)) & M32;
    yield Number(t ^ (t >> 14n)) / 2 ** 32;
  }
}

const SEEDS = [0, 1, 42, 2 ** 32 - 1, -5, 0x9e3779b9, 2 ** 40 + 3];

Deno.test("Rng: every draw equals an independent BigInt mulberry32, for seeds across u32 and beyond", () => {
  for (const seed of SEEDS) {
    const rng = new Rng(seed);
    const ref = bigintMulberry32(seed);
    for (let i = 0; i < 2000; i++) {
      const got = rng.next();
      assert.equal(got, ref.next().value, `seed ${seed}, draw ${i}`);
      assert.ok(got >= 0 && got < 1);
    }
  }
});

Deno.test("mulberry32(), the CLI's Rng and the tests' reference rng are the same sequence as Rng", () => {
  for (const seed of SEEDS) {
    const a = new Rng(seed), f = mulberry32(seed), cli = new CliRng(seed), ref = referenceRng(seed);
    for (let i = 0; i < 500; i++) {
      const x = a.next();
      assert.equal(f(), x);
      assert.equal(cli.next(), x);
      assert.equal(ref(), x);
    }
  }
});

Deno.test("Rng: saving `state` and setting it back resumes the exact sequence", () => {
  const rng = new Rng(7);
  for (let i = 0; i < 37; i++) rng.next();
  const saved = rng.state;
  assert.ok(Number.isInteger(saved) && saved >= 0 && saved < 2 ** 32);
  const first = Array.from({ length: 50 }, () => rng.int(1000));
  const resumed = new Rng(0);
  resumed.state = saved;
  assert.deepEqual(Array.from({ length: 50 }, () => resumed.int(1000)), first);
});

Deno.test("Rng.int(n): integers in [0, n), every value reached, roughly uniform", () => {
  const rng = new Rng(3);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 20000; i++) {
    const v = rng.int(10);
    assert.ok(Number.isInteger(v) && v >= 0 && v < 10, `${v}`);
    counts[v]++;
  }
  // χ² with 9 degrees of freedom: 27.9 is the 0.999 quantile.
  const chi2 = counts.reduce((s, c) => s + (c - 2000) ** 2 / 2000, 0);
  assert.ok(chi2 < 27.9, `χ² = ${chi2} for counts ${counts}`);
});
