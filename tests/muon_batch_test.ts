/**
 * Muon's batched Newton–Schulz (optim/muon_batch.ts, ops/muon_batch.ts): the plan places
 * every matrix exactly once in a batch that holds it (padding within the slack, batches within
 * the byte cap, stacks split across batches when they must), and a Muon step over many
 * parameters of mixed shapes — tall and wide, sizes that are not multiples of 4, stacks, and
 * transposed-view gradients as the linear layers leave them — matches the float64 reference
 * per matrix, whether shapes merge (padding), stay apart, or split over small batches.
 *
 * Tolerance: as tests/muon_test.ts (5e-6 after three steps at lr 0.05); zero padding is exact
 * in exact arithmetic, so padded batches must meet the same bound.
 */
import * as mg from "../mod.ts";
import { Muon } from "../optim/mod.ts";
import { planNsGroups } from "../optim/muon_batch.ts";
import { muonGather, muonScatterApply } from "../ops/muon_batch.ts";
import { assertClose, check, f32, fc, gpu, param } from "./util.ts";
import { gaussian } from "./reference/linalg.ts";
import { muonStepRef } from "./reference/optim.ts";
import assert from "node:assert/strict";

await gpu();

const Q5 = Array(5).fill([3.4445, -4.775, 2.0315]);
const shapeArb = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 24 }), fc.integer({ min: 1, max: 24 })),
  fc.tuple(
    fc.integer({ min: 1, max: 5 }),
    fc.integer({ min: 1, max: 24 }),
    fc.integer({ min: 1, max: 24 }),
  ),
);

Deno.test("planNsGroups: every matrix once, in a batch that holds it; slack and byte cap kept", async () => {
  await check(
    fc.record({
      shapes: fc.array(shapeArb, { minLength: 1, maxLength: 12 }),
      slack: fc.constantFrom(0, 0.25, 1, 100),
      cap: fc.constantFrom(1 << 12, 1 << 16, 1 << 26),
    }),
    ({ shapes, slack, cap }) => {
      const plan = planNsGroups(shapes, { padSlack: slack, maxBytes: cap });
      const seen = shapes.map((s) => new Array<number>(s.length === 3 ? s[0] : 1).fill(0));
      for (const g of plan) {
        assert.ok(g.R <= g.K && g.R % 4 === 0 && g.K % 4 === 0, `batch [${g.R}, ${g.K}]`);
        const perMatrix = g.R * g.K * 4;
        assert.ok(g.count * perMatrix <= cap || g.count === 1, `batch of ${g.count} over ${cap} B`);
        let useful = 0;
        let next = 0;
        for (const m of g.members) {
          const s = shapes[m.index];
          const [A, B] = s.slice(-2);
          assert.ok(Math.min(A, B) <= g.R && Math.max(A, B) <= g.K, `[${s}] in [${g.R}, ${g.K}]`);
          assert.equal(m.first, next, "members are laid out back to back");
          next += m.count;
          for (let e = m.start; e < m.start + m.count; e++) seen[m.index][e]++;
          useful += m.count * Math.min(A, B) ** 2 * Math.max(A, B);
        }
        assert.equal(next, g.count);
        const shapesIn = new Set(
          g.members.map((m) => {
            const [A, B] = shapes[m.index].slice(-2);
            return `${Math.ceil(Math.min(A, B) / 4)}x${Math.ceil(Math.max(A, B) / 4)}`;
          }),
        );
        // A batch of one padded shape may waste any amount (rounding up to 4); a merged one
        // holds its padding within the slack (over the batch's work before any split).
        if (shapesIn.size > 1 && cap === 1 << 26) {
          const waste = 1 - useful / (g.count * g.R * g.R * g.K);
          assert.ok(waste <= slack + 1e-12, `waste ${waste} > slack ${slack}`);
        }
      }
      assert.ok(
        seen.every((row) => row.every((c) => c === 1)),
        `placements ${JSON.stringify(seen)}`,
      );
      if (slack === 0) {
        const keys = plan.map((g) => `${g.R}x${g.K}`);
        const distinct = new Set(
          shapes.map((s) => {
            const [A, B] = s.slice(-2);
            const r4 = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);
            return `${r4(Math.min(A, B))}x${r4(Math.max(A, B))}`;
          }),
        );
        if (cap === 1 << 26) {
          assert.equal(keys.length, distinct.size, "slack 0: one batch per shape");
        }
      }
      return Promise.resolve();
    },
    40,
  );
});

Deno.test("Muon batched over mixed shapes matches the float64 reference per matrix (merged, apart, split; 5e-6)", async () => {
  // Tall and wide, non-multiples of 4, stacks, and a 1-row matrix.
  const shapes = [[6, 10], [10, 6], [5, 3], [12, 12], [3, 7, 5], [8, 8], [2, 6, 6], [1, 9]];
  const live0 = mg.memory().liveTensors;
  for (
    const [slack, cap] of [[0.25, 1 << 26], [0, 1 << 26], [100, 1 << 26], [100, 256]] as const
  ) {
    const ps = shapes.map((s, i) => {
      const n = s.reduce((a, b) => a * b, 1);
      return param(gaussian(1, n, 7 + i).a, s);
    });
    const opt = new Muon(ps, { lr: 0.05, nsPadSlack: slack, nsMaxBatchBytes: cap });
    const refs = shapes.map((s, i) => {
      const [A, B] = s.slice(-2);
      const E = s.length === 3 ? s[0] : 1;
      const w0 = gaussian(1, E * A * B, 7 + i).a;
      return Array.from({ length: E }, (_, e) => ({
        p: w0.slice(e * A * B, (e + 1) * A * B),
        s: {
          lr: 0.05,
          momentum: 0.95,
          nesterov: true,
          weightDecay: 0.1,
          scale: 0.2 * Math.sqrt(Math.max(A, B)),
          schedule: Q5,
          m: new Float64Array(A * B),
        },
      }));
    });
    for (let t = 0; t < 3; t++) {
      shapes.forEach((s, i) => {
        const [A, B] = s.slice(-2);
        const E = s.length === 3 ? s[0] : 1;
        const g = gaussian(1, E * A * B, 100 * t + i).a;
        ps[i].grad?.dispose();
        if (s.length === 2) {
          // What a linear layer's backward leaves: the transpose of a contiguous [B, A].
          const gt = new Float64Array(A * B);
          for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) gt[b * A + a] = g[a * B + b];
          const base = f32(gt, [B, A]);
          ps[i].grad = base.transpose();
          base.dispose();
        } else ps[i].grad = f32(g, s);
        refs[i].forEach((r, e) =>
          muonStepRef(r.p, g.subarray(e * A * B, (e + 1) * A * B), A, B, r.s)
        );
      });
      await opt.step();
    }
    for (let i = 0; i < shapes.length; i++) {
      const want = new Float64Array(refs[i].reduce((a, r) => a + r.p.length, 0));
      let at = 0;
      for (const r of refs[i]) {
        want.set(r.p, at);
        at += r.p.length;
      }
      assertClose(
        await ps[i].data(),
        want,
        { rtol: 0, atol: 5e-6 },
        `[${shapes[i]}] slack ${slack} cap ${cap}`,
      );
    }
    opt.dispose();
    for (const p of ps) p.dispose();
  }
  assert.equal(mg.memory().liveTensors, live0, "every temporary and batch was freed");
});

Deno.test("muonGather / muonScatterApply: any slot placement (out of order, gaps) is correct; bad input is a MoongradError", async () => {
  // b [2, 4] goes to matrix 0, a [6, 4] (tall: stored as [4, 6]) to matrix 2; matrix 1 untouched.
  const ga = Array.from({ length: 24 }, (_, i) => i + 1);
  const gb = Array.from({ length: 8 }, (_, i) => -(i + 1));
  const a = f32(ga, [6, 4]);
  const b = f32(gb, [2, 4]);
  const ma = mg.zeros([6, 4]);
  const mb = mg.zeros([2, 4]);
  const batch = mg.full([3, 4, 8], 7);
  const mu = 0.5;
  muonGather(
    [{ grad: a, momentum: ma, first: 2 }, { grad: b, momentum: mb, first: 0 }],
    batch,
    mu,
    1,
    true,
  );
  const u = await batch.data();
  const want = new Float32Array(3 * 32).fill(7);
  for (let r = 0; r < 4; r++) {
    for (let k = 0; k < 8; k++) {
      want[r * 8 + k] = r < 2 && k < 4 ? gb[r * 4 + k] * (1 + mu) : 0; // b, padded
      want[64 + r * 8 + k] = k < 6 ? ga[k * 4 + r] * (1 + mu) : 0; // aᵀ, padded
    }
  }
  assert.deepEqual(Array.from(u), Array.from(want));
  const pa = mg.ones([6, 4]);
  const pb = mg.ones([2, 4]);
  muonScatterApply(
    [{ param: pa, first: 2, step: 0.5 }, { param: pb, first: 0, step: 1 }],
    batch,
    0.1,
    0,
  );
  const da = await pa.data();
  for (let i = 0; i < 24; i++) assert.equal(da[i], Math.fround(1 - 0.5 * Math.fround(ga[i] * 1.5)));
  const db = await pb.data();
  for (let i = 0; i < 8; i++) assert.equal(db[i], Math.fround(1 - Math.fround(gb[i] * 1.5)));
  assert.throws(
    () => muonGather([{ grad: a, momentum: ma, first: 2 }], mg.zeros([2, 4, 8]), mu, 1, true),
    (e) => e instanceof mg.MoongradError && /does not fit batch/.test(e.message),
  );
  assert.throws(
    () => new Muon([param([1, 2, 3, 4], [2, 2])], { lr: 0.1, nsMaxBatchBytes: 0 }),
    (e) => e instanceof mg.MoongradError && /nsMaxBatchBytes/.test(e.message),
  );
  assert.throws(
    () => new Muon([param([1, 2, 3, 4], [2, 2])], { lr: 0.1, nsPadSlack: -1 }),
    (e) => e instanceof mg.MoongradError && /nsPadSlack/.test(e.message),
  );
  for (const t of [a, b, ma, mb, batch, pa, pb]) t.dispose();
});
