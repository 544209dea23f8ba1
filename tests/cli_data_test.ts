/**
 * The trainer's data layer (no GPU): UTF-8 validation against TextDecoder's fatal mode, the
 * deterministic split, and the batch sampler's resumable state.
 */
import assert from "node:assert/strict";
import { fc } from "./util.ts";
import {
  BatchSampler,
  firstInvalidUtf8,
  hashBytes,
  splitCorpus,
  validationBatches,
} from "../cli/data.ts";
import { CliError } from "../cli/errors.ts";

Deno.test("firstInvalidUtf8 agrees with TextDecoder({ fatal: true }) on random bytes", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  const valid = (b: Uint8Array) => {
    try {
      fatal.decode(b);
      return true;
    } catch {
      return false;
    }
  };
  // Mix arbitrary bytes with encoded strings so both valid and invalid inputs are common.
  const arb = fc.oneof(
    fc.uint8Array({ maxLength: 24 }),
    fc.string({ unit: "binary", maxLength: 12 }).map((s) => new TextEncoder().encode(s)),
    fc.tuple(
      fc.string({ unit: "binary", maxLength: 8 }),
      fc.uint8Array({ minLength: 1, maxLength: 3 }),
    ).map(([s, tail]) => {
      const a = new TextEncoder().encode(s);
      const out = new Uint8Array(a.length + tail.length);
      out.set(a);
      out.set(tail, a.length);
      return out;
    }),
  );
  fc.assert(
    fc.property(arb, (b) => {
      const bad = firstInvalidUtf8(b);
      assert.deepStrictEqual(bad < 0, valid(b));
      if (bad >= 0) assert.ok(valid(b.subarray(0, bad)), "the prefix before the offset is valid");
    }),
    { numRuns: 2000 },
  );
});

Deno.test("splitCorpus is deterministic, disjoint and complete; too-short text is a CliError", () => {
  const bytes = new Uint8Array(50_000).map((_, i) => (i * 31 + (i >> 7)) & 0x7f);
  const a = splitCorpus(bytes, 64, "x");
  const b = splitCorpus(bytes, 64, "x");
  assert.deepStrictEqual(a.train, b.train);
  assert.deepStrictEqual(a.val, b.val);
  assert.deepStrictEqual(a.train.length + a.val.length, bytes.length);
  assert.ok(a.val.length >= bytes.length * 0.08 && a.val.length <= bytes.length * 0.12);
  assert.deepStrictEqual(a.hash, hashBytes(bytes));
  // Small text: the last chunk becomes validation, both sides hold at least seqLen + 1.
  const small = splitCorpus(new Uint8Array(40).fill(65), 16, "s");
  assert.ok(small.train.length >= 17 && small.val.length >= 17);
  assert.throws(
    () => splitCorpus(new Uint8Array(30).fill(65), 16, "tiny"),
    (e) => e instanceof CliError && /too short/.test(e.message),
  );
});

Deno.test("BatchSampler: targets are inputs shifted by one; a restored state continues exactly", () => {
  const data = new Uint8Array(3000).map((_, i) => (i * 7) % 251);
  const s1 = new BatchSampler(data, 3, 16, 42);
  const seen: Int32Array[] = [];
  for (let i = 0; i < 90; i++) seen.push(s1.next().ids); // crosses several epochs
  const state = s1.state;
  const expected = Array.from({ length: 40 }, () => s1.next());
  const s2 = new BatchSampler(data, 3, 16, 7); // different seed: the state overrides it
  s2.state = state;
  for (const e of expected) {
    const got = s2.next();
    assert.deepStrictEqual(got.ids, e.ids);
    assert.deepStrictEqual(got.targets, e.targets);
  }
  for (const b of expected) {
    for (let r = 0; r < 3; r++) {
      for (let t = 0; t < 15; t++) {
        assert.deepStrictEqual(b.targets[r * 16 + t], b.ids[r * 16 + t + 1]);
      }
    }
  }
  // Every window of one epoch is served once before the next epoch starts.
  const s3 = new BatchSampler(new Uint8Array(200).map((_, i) => i), 1, 10, 3);
  const firsts = new Set<number>();
  const n = s3.state.epoch;
  while (s3.state.epoch === n) firsts.add(s3.next().ids[0]);
  assert.ok(firsts.size >= 18, `one epoch covers the windows (${firsts.size})`);
});

Deno.test("validationBatches are fixed and inside the validation text", () => {
  const val = new Uint8Array(1000).map((_, i) => i % 256);
  const a = validationBatches(val, 4, 32, 3);
  assert.deepStrictEqual(a.length, 3);
  assert.deepStrictEqual(validationBatches(val, 4, 32, 3), a);
  for (const b of a) assert.deepStrictEqual(b.ids.length, 4 * 32);
});
