/**
 * DeepSeekMoE: routing, the GPU counting sort, the grouped matmul, the block's forward and
 * gradients vs the float64 reference (tests/reference/moe.ts), balancing, aux loss, HF state
 * dict names and memory.
 *
 * Tolerances: forward outputs are sums of ≤ K + 1 SwiGLU experts over D, I ≤ 16 in f32:
 * rtol 1e-4, atol 1e-5 (f32 accumulation of ~D·I products ~ 1e-6 relative, plus the router's
 * f32 sigmoid). Gradients vs float64 central differences (h = 1e-6 on the float64 reference,
 * error ~1e-9): rtol 1e-3, atol 1e-4 — the GPU gradient is an f32 chain of 5 matmuls.
 * Routing stays away from ties: router weights are uniform in [-1, 1] so the E keys per token
 * differ by ≫ f32 rounding, and a perturbation of 1e-6 never changes the selection.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { DeepseekMoE, MoEGate } from "../nn/moe.ts";
import { makeConfig } from "../nn/config.ts";
import { groupedMatmul, groupedWeightGrad, moeBiasUpdate, moePlan, moeRoute } from "../ops/moe.ts";
import { check, fc, gpu, seededValues } from "./util.ts";
import { NDArray, numericGrad } from "./reference/ndarray.ts";
import {
  type MoeRefWeights,
  refAuxLoss,
  refDenseMoe,
  refGroupedMatmul,
  type RefGroups,
  refMoe,
  refRoute,
  refScores,
} from "./reference/moe.ts";

const FWD = { rtol: 1e-4, atol: 1e-5 };
const GRAD = { rtol: 1e-3, atol: 1e-4 };

interface Case {
  d: number;
  e: number;
  k: number;
  i: number;
  n: number;
  shared: number;
  normalize: boolean;
  scale: number;
  seed: number;
}

const arbCase: fc.Arbitrary<Case> = fc.record({
  d: fc.integer({ min: 8, max: 16 }),
  e: fc.integer({ min: 4, max: 6 }),
  k: fc.integer({ min: 1, max: 3 }),
  i: fc.integer({ min: 4, max: 8 }),
  n: fc.integer({ min: 1, max: 20 }),
  shared: fc.integer({ min: 0, max: 2 }),
  normalize: fc.boolean(),
  scale: fc.double({ min: 0.5, max: 3, noNaN: true }),
  seed: fc.integer({ min: 1, max: 1e6 }),
});

function f32(v: ArrayLike<number>): Float32Array {
  return Float32Array.from(v);
}

/** A MoE block with seeded weights (router spread wide), and its float64 twin. */
function build(
  c: Case,
  alpha = 0,
  groups?: RefGroups,
): { moe: DeepseekMoE; ref: MoeRefWeights } {
  const cfg = makeConfig({
    n_group: groups?.nGroup ?? 1,
    topk_group: groups?.topkGroup ?? 1,
    hidden_size: c.d,
    moe_intermediate_size: c.i,
    n_routed_experts: c.e,
    num_experts_per_tok: c.k,
    n_shared_experts: c.shared,
    routed_scaling_factor: c.scale,
    norm_topk_prob: c.normalize,
    aux_loss_alpha: alpha,
  });
  const moe = new DeepseekMoE(cfg, { seed: c.seed });
  const is = c.i * c.shared;
  const vals = (n: number, s: number, lo: number, hi: number) =>
    seededValues(n, c.seed * 7 + s, lo, hi);
  const ref: MoeRefWeights = {
    d: c.d,
    e: c.e,
    k: c.k,
    i: c.i,
    is,
    scale: Math.fround(c.scale),
    normalize: c.normalize,
    groups,
    gate: Float64Array.from(vals(c.e * c.d, 1, -1, 1)),
    bias: new Float64Array(c.e),
    wg: Float64Array.from(vals(c.e * c.i * c.d, 2, -0.5, 0.5)),
    wu: Float64Array.from(vals(c.e * c.i * c.d, 3, -0.5, 0.5)),
    wd: Float64Array.from(vals(c.e * c.d * c.i, 4, -0.5, 0.5)),
    sg: Float64Array.from(vals(is * c.d, 5, -0.5, 0.5)),
    su: Float64Array.from(vals(is * c.d, 6, -0.5, 0.5)),
    sd: Float64Array.from(vals(c.d * is, 7, -0.5, 0.5)),
  };
  const put = (t: mg.Tensor, v: Float64Array) => {
    const src = mg.tensor(f32(v), { shape: t.shape });
    t.assign(src);
    src.dispose();
  };
  put(moe.gate.weight, ref.gate);
  put(moe.experts.gateProj, ref.wg);
  put(moe.experts.upProj, ref.wu);
  put(moe.experts.downProj, ref.wd);
  if (moe.sharedExperts) {
    put(moe.sharedExperts.gateProj.weight, ref.sg);
    put(moe.sharedExperts.upProj.weight, ref.su);
    put(moe.sharedExperts.downProj.weight, ref.sd);
  }
  return { moe, ref };
}

function setBias(moe: DeepseekMoE, ref: MoeRefWeights, bias: number[]): void {
  const t = mg.tensor(bias);
  moe.gate.eScoreCorrectionBias.assign(t);
  t.dispose();
  ref.bias = Float64Array.from(f32(bias));
}

function inputs(c: Case): Float64Array {
  return Float64Array.from(seededValues(c.n * c.d, c.seed * 13 + 5, -1, 1));
}

async function forwardCheck(c: Case, bias?: number[]): Promise<void> {
  const { moe, ref } = build(c);
  if (bias) setBias(moe, ref, bias);
  const xv = inputs(c);
  const x = mg.tensor(f32(xv), { shape: [c.n, c.d] });
  const stats = new mg.nn.StepStats({ indices: true });
  const y = moe.forward(x, { stats });
  const want = refMoe(xv, ref);
  const sel = stats.indices(moe)[0];
  assert.deepEqual(Array.from(await sel.data()), Array.from(want.idx), "selection");
  assert.deepEqual(Array.from(await stats.moe(moe)!.load.data()), Array.from(want.load), "load");
  assert.equal(stats.moe(moe)!.pairs, c.n * c.k, "pairs");
  stats.dispose();
  const got = await y.data();
  try {
    for (let j = 0; j < got.length; j++) {
      const tol = FWD.atol + FWD.rtol * Math.abs(want.y[j]);
      if (Math.abs(got[j] - want.y[j]) > tol) {
        throw new Error(`y[${j}] = ${got[j]}, expected ${want.y[j]} (case ${JSON.stringify(c)})`);
      }
    }
  } finally {
    x.dispose();
    y.dispose();
    moe.dispose();
  }
}

function assertNear(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: typeof FWD,
  what: string,
) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let j = 0; j < got.length; j++) {
    if (!(Math.abs(got[j] - want[j]) <= tol.atol + tol.rtol * Math.abs(want[j]))) {
      throw new Error(`${what}[${j}]: got ${got[j]}, expected ${want[j]}`);
    }
  }
}

Deno.test("groupedMatmul: forward and both gradients vs float64, random groups incl. empty (rtol 1e-4)", async () => {
  await gpu();
  const arb = fc.record({
    sizes: fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 40 })), {
      minLength: 1,
      maxLength: 6,
    }),
    inF: fc.integer({ min: 1, max: 37 }),
    outF: fc.integer({ min: 1, max: 35 }),
    seed: fc.integer({ min: 1, max: 1e6 }),
  });
  await check(arb, async ({ sizes, inF, outF, seed }) => {
    const offs = [0];
    for (const s of sizes) offs.push(offs[offs.length - 1] + s);
    const m = offs[offs.length - 1];
    const e = sizes.length;
    const av = seededValues(m * inF, seed, -1, 1);
    const wv = seededValues(e * outF * inF, seed + 1, -1, 1);
    const gv = seededValues(m * outF, seed + 2, -1, 1);
    const a = mg.tensor(av, { shape: [m, inF], requiresGrad: true });
    const w = mg.tensor(wv, { shape: [e, outF, inF], requiresGrad: true });
    const off = mg.tensor(Int32Array.from(offs));
    const g = mg.tensor(gv, { shape: [m, outF] });
    const y = groupedMatmul(a, w, off);
    const want = refGroupedMatmul(
      Float64Array.from(av),
      Float64Array.from(wv),
      offs,
      inF,
      outF,
      Float64Array.from(gv),
    );
    try {
      assertNear(await y.data(), want.y, FWD, "y");
      if (m > 0) {
        y.backward(g);
        assertNear(await a.grad!.data(), want.da, FWD, "da");
        assertNear(await w.grad!.data(), want.dw, FWD, "dw");
      }
    } finally {
      for (const t of [a, w, off, g, y]) {
        t.zeroGrad();
        t.dispose();
      }
    }
  }, 20);
});

Deno.test("groupedWeightGrad: empty groups give exact zeros; offsets checked", async () => {
  await gpu();
  const p = mg.tensor(seededValues(6 * 3, 4), { shape: [6, 3] });
  const q = mg.tensor(seededValues(6 * 2, 5), { shape: [6, 2] });
  const off = mg.tensor(new Int32Array([0, 0, 6, 6]));
  const dw = groupedWeightGrad(p, q, off);
  const v = await dw.data();
  assert.deepEqual(Array.from(v.slice(0, 6)), [0, 0, 0, 0, 0, 0]);
  assert.deepEqual(Array.from(v.slice(12)), [0, 0, 0, 0, 0, 0]);
  assert.ok(v.slice(6, 12).some((z) => z !== 0));
  assert.throws(() => groupedMatmul(p, mg.zeros([2, 4, 3]), off), /groupedMatmul.*offsets/);
  for (const t of [p, q, off, dw]) t.dispose();
});

Deno.test("moePlan: exact counts, offsets and a stable sort by expert (random indices)", async () => {
  await gpu();
  const arb = fc.record({
    n: fc.integer({ min: 1, max: 700 }),
    k: fc.integer({ min: 1, max: 3 }),
    e: fc.integer({ min: 1, max: 300 }),
    seed: fc.integer({ min: 1, max: 1e6 }),
    skew: fc.boolean(),
  });
  await check(arb, async ({ n, k, e, seed, skew }) => {
    const r = seededValues(n * k, seed, 0, 1);
    const ids = Int32Array.from(r, (v) => Math.min(e - 1, Math.floor((skew ? v * v * v : v) * e)));
    const t = mg.tensor(ids, { shape: [n, k] });
    const plan = moePlan(t, e);
    const counts = new Int32Array(e);
    for (const x of ids) counts[x]++;
    const offs = [0];
    for (let x = 0; x < e; x++) offs.push(offs[x] + counts[x]);
    const perm = Array.from({ length: n * k }, (_, p) => p).sort((a, b) =>
      ids[a] - ids[b] || a - b
    );
    const inv = new Array(n * k);
    perm.forEach((p, pos) => (inv[p] = pos));
    try {
      assert.deepEqual(Array.from(await plan.counts.data()), Array.from(counts));
      assert.deepEqual(Array.from(await plan.offsets.data()), offs);
      assert.deepEqual(Array.from(await plan.perm.data()), perm);
      assert.deepEqual(Array.from(await plan.inv.data()), inv);
    } finally {
      t.dispose();
      for (const x of [plan.counts, plan.offsets, plan.perm, plan.inv]) x.dispose();
    }
  }, 15);
});

Deno.test("moeRoute: weights from the unbiased scores; the bias only selects (rtol 1e-6)", async () => {
  await gpu();
  await check(arbCase, async (c) => {
    const s = seededValues(c.n * c.e, c.seed, 0.05, 0.95);
    const b = Array.from(seededValues(c.e, c.seed + 9, -0.5, 0.5));
    const st = mg.tensor(s, { shape: [c.n, c.e] });
    const bt = mg.tensor(b);
    const { weights, indices } = moeRoute(st, bt, c.k, { scale: c.scale, normalize: c.normalize });
    const want = refRoute(
      Float64Array.from(s),
      Float64Array.from(f32(b)),
      c.e,
      c.k,
      Math.fround(c.scale),
      c.normalize,
    );
    const unbiased = refRoute(Float64Array.from(s), new Float64Array(c.e), c.e, c.k, 1, false);
    try {
      assert.deepEqual(Array.from(await indices.data()), Array.from(want.idx));
      assertNear(await weights.data(), want.w, { rtol: 1e-6, atol: 1e-7 }, "weights");
      // the bias must change the selection for some token whenever it reorders the keys
      const same = Array.from(want.idx).every((v, j) => v === unbiased.idx[j]);
      if (!same) assert.notDeepEqual(Array.from(await indices.data()), Array.from(unbiased.idx));
    } finally {
      for (const t of [st, bt, weights, indices]) t.dispose();
    }
  }, 20);
});

/** A routing case with a group limit: E = nGroup · groupSize experts. */
interface GroupCase {
  nGroup: number;
  groupSize: number;
  topkGroup: number;
  k: number;
  n: number;
  scale: number;
  normalize: boolean;
  seed: number;
  /** Values on a grid of 1/8 (many exact ties in keys and group scores), else continuous. */
  grid: boolean;
}

const arbGroupCase: fc.Arbitrary<GroupCase> = fc.record({
  nGroup: fc.integer({ min: 2, max: 5 }),
  groupSize: fc.integer({ min: 2, max: 4 }),
  topkGroup: fc.integer({ min: 1, max: 5 }),
  k: fc.integer({ min: 1, max: 20 }),
  n: fc.integer({ min: 1, max: 24 }),
  scale: fc.double({ min: 0.5, max: 3, noNaN: true }),
  normalize: fc.boolean(),
  seed: fc.integer({ min: 1, max: 1e6 }),
  grid: fc.boolean(),
}).map((c) => ({
  ...c,
  topkGroup: Math.min(c.topkGroup, c.nGroup),
  k: Math.min(c.k, c.nGroup * c.groupSize),
}));

async function groupRouteCheck(c: GroupCase, what: string): Promise<void> {
  const e = c.nGroup * c.groupSize;
  const snap = (v: number) => (c.grid ? Math.round(v * 8) / 8 : v);
  // Scores in (0, 1) like sigmoid outputs; biases in [-0.75, 0.75] so some keys are
  // negative and the masked 0 of a dropped group can beat them (HF masks with 0, not −∞).
  const s = Array.from(seededValues(c.n * e, c.seed, 0.05, 0.95), snap);
  const b = Array.from(seededValues(e, c.seed + 9, -0.75, 0.75), snap);
  const st = mg.tensor(s, { shape: [c.n, e] });
  const bt = mg.tensor(b);
  const groups = { nGroup: c.nGroup, topkGroup: c.topkGroup };
  const { weights, indices } = moeRoute(st, bt, c.k, {
    scale: c.scale,
    normalize: c.normalize,
    ...groups,
  });
  const want = refRoute(
    Float64Array.from(f32(s)),
    Float64Array.from(f32(b)),
    e,
    c.k,
    Math.fround(c.scale),
    c.normalize,
    groups,
    true,
  );
  try {
    assert.deepEqual(
      Array.from(await indices.data()),
      Array.from(want.idx),
      `${what}: selection (case ${JSON.stringify(c)})`,
    );
    assertNear(await weights.data(), want.w, { rtol: 1e-6, atol: 1e-7 }, `${what}: weights`);
  } finally {
    for (const t of [st, bt, weights, indices]) t.dispose();
  }
}

Deno.test("moeRoute group-limited (n_group/topk_group) = float64 HF reference, ties included (exact selection, rtol 1e-6)", async () => {
  await gpu();
  await check(arbGroupCase, (c) => groupRouteCheck(c, "grouped"), 40);
  // Tie-heavy cases explicitly (values on a 1/8 grid: equal keys and equal group scores).
  await check(
    arbGroupCase.map((c) => ({ ...c, grid: true })),
    (c) => groupRouteCheck(c, "ties"),
    20,
  );
});

Deno.test("moeRoute group limit: hand-checked cases (masked experts score 0; group ties keep the lower group)", async () => {
  await gpu();
  // 4 experts in 2 groups, keep 1 group. Group 0 keys {0.9, −0.6} → 0.3; group 1 keys
  // {0.2, 0.2} → 0.4: group 1 is kept, group 0 is masked to key 0. Top-3 by key:
  // expert 2 (0.2), expert 3 (0.2), then expert 0 (masked 0) before expert 1 (masked 0).
  const run = async (s: number[], b: number[], k: number, nGroup: number, topkGroup: number) => {
    const st = mg.tensor(s, { shape: [1, s.length] });
    const bt = mg.tensor(b);
    const r = moeRoute(st, bt, k, { nGroup, topkGroup, normalize: false });
    const got = Array.from(await r.indices.data());
    for (const t of [st, bt, r.weights, r.indices]) t.dispose();
    return got;
  };
  assert.deepEqual(await run([0.9, 0.4, 0.2, 0.2], [0, -1, 0, 0], 3, 2, 1), [2, 3, 0]);
  // A kept expert with a negative key loses to a masked expert (key 0): group 1 kept (0.5 vs
  // 0.1), its expert 3 has key −0.25, so top-2 = expert 2 then masked expert 0.
  assert.deepEqual(await run([0.5, 0.1, 0.5, 0.25], [-0.25, -0.25, 0.25, -0.5], 2, 2, 1), [2, 0]);
  // Equal group scores: the lower group wins the only slot.
  assert.deepEqual(await run([0.25, 0.5, 0.5, 0.25], [0, 0, 0, 0], 2, 2, 1), [1, 0]);
  // topk_group = n_group and n_group = 1 route exactly as no group limit.
  const s = Array.from(seededValues(8 * 12, 5, 0.05, 0.95));
  const b = Array.from(seededValues(12, 6, -0.5, 0.5));
  const st = mg.tensor(s, { shape: [8, 12] });
  const bt = mg.tensor(b);
  const plain = moeRoute(st, bt, 5);
  const all = moeRoute(st, bt, 5, { nGroup: 4, topkGroup: 4 });
  const one = moeRoute(st, bt, 5, { nGroup: 1, topkGroup: 1 });
  const want = Array.from(await plain.indices.data());
  assert.deepEqual(Array.from(await all.indices.data()), want);
  assert.deepEqual(Array.from(await one.indices.data()), want);
  assert.deepEqual(Array.from(await one.weights.data()), Array.from(await plain.weights.data()));
  for (const t of [st, bt, plain.weights, plain.indices, all.weights, all.indices]) t.dispose();
  for (const t of [one.weights, one.indices]) t.dispose();
  const s4 = mg.zeros([2, 6]);
  const b6 = mg.zeros([6]);
  assert.throws(() => moeRoute(s4, b6, 2, { nGroup: 4 }), /moeRoute.*nGroup/);
  assert.throws(() => moeRoute(s4, b6, 2, { nGroup: 3, topkGroup: 4 }), /moeRoute.*topkGroup/);
  assert.throws(() => moeRoute(s4, b6, 2, { nGroup: 6, topkGroup: 2 }), /moeRoute.*>= 2 experts/);
  s4.dispose();
  b6.dispose();
});

Deno.test("moeRoute on logits (sigmoid inside) = sigmoid then moeRoute, bit for bit, forward and backward", async () => {
  await gpu();
  for (
    const [opts, nan] of [[{}, false], [{ nGroup: 4, topkGroup: 2, scale: 2.5 }, false], [{
      normalize: false,
    }, true]] as const
  ) {
    const x = Array.from(seededValues(16 * 12, 9, -4, 4));
    if (nan) x[5] = NaN; // an unselected NaN logit: NaN gradient on its row, as the eager sigmoid gives
    const bias = mg.tensor(Array.from(seededValues(12, 10, -0.5, 0.5)));
    const la = mg.tensor(x, { shape: [16, 12], requiresGrad: true });
    const lb = mg.tensor(x, { shape: [16, 12], requiresGrad: true });
    const up = mg.tensor(Array.from(seededValues(16 * 3, 11)), { shape: [16, 3] });
    const fused = moeRoute(la, bias, 3, { ...opts, logits: true });
    const eager = moeRoute(mg.sigmoid(lb), bias, 3, opts);
    assert.deepEqual(await fused.indices.data(), await eager.indices.data());
    assert.deepEqual(await fused.weights.data(), await eager.weights.data());
    fused.weights.mul(up).sum().backward();
    eager.weights.mul(up).sum().backward();
    assert.deepEqual(await la.grad!.data(), await lb.grad!.data());
    for (
      const t of [bias, la, lb, up, fused.weights, fused.indices, eager.weights, eager.indices]
    ) {
      t.dispose();
    }
  }
  assert.throws(
    () => moeRoute(mg.zeros([2, 4]), mg.zeros([4]), 2, { logits: 1 as unknown as boolean }),
    /moeRoute.*logits must be a boolean/,
  );
});

Deno.test("DeepseekMoE with n_group/topk_group vs the float64 grouped reference (rtol 1e-4)", async () => {
  await gpu();
  const arb = fc.record({
    c: arbCase,
    groupSize: fc.integer({ min: 2, max: 3 }),
    nGroup: fc.integer({ min: 2, max: 4 }),
    topkGroup: fc.integer({ min: 1, max: 3 }),
  }).map(({ c, groupSize, nGroup, topkGroup }) => ({
    c: { ...c, e: groupSize * nGroup, k: Math.min(c.k, groupSize * Math.min(topkGroup, nGroup)) },
    groups: { nGroup, topkGroup: Math.min(topkGroup, nGroup) },
  }));
  await check(arb, async ({ c, groups }) => {
    const { moe, ref } = build(c, 0, groups);
    const bias = Array.from(seededValues(c.e, c.seed + 3, -0.3, 0.3));
    setBias(moe, ref, bias);
    const xv = inputs(c);
    const x = mg.tensor(f32(xv), { shape: [c.n, c.d] });
    const stats = new mg.nn.StepStats({ indices: true });
    const y = moe.forward(x, { stats });
    const want = refMoe(xv, ref);
    try {
      assert.deepEqual(Array.from(await stats.indices(moe)[0].data()), Array.from(want.idx));
      assertNear(await y.data(), want.y, FWD, "grouped y");
    } finally {
      stats.dispose();
      x.dispose();
      y.dispose();
      moe.dispose();
    }
  }, 12);
});

Deno.test("DeepseekMoE forward vs float64 reference on random configs (rtol 1e-4)", async () => {
  await gpu();
  await check(arbCase, (c) => forwardCheck(c), 20);
});

Deno.test("DeepseekMoE: with K = E and zero bias it equals the weighted dense sum (rtol 1e-4)", async () => {
  await gpu();
  const arb = arbCase.map((c) => ({ ...c, k: c.e, normalize: true }));
  await check(arb, async (c) => {
    const { moe, ref } = build(c);
    const xv = inputs(c);
    const x = mg.tensor(f32(xv), { shape: [c.n, c.d] });
    const stats = new mg.nn.StepStats();
    const y = moe.forward(x, { stats });
    try {
      assertNear(await y.data(), refDenseMoe(xv, ref), FWD, "dense");
      assert.deepEqual(Array.from(await stats.moe(moe)!.load.data()), new Array(c.e).fill(c.n));
    } finally {
      stats.dispose();
      x.dispose();
      y.dispose();
      moe.dispose();
    }
  }, 10);
});

Deno.test("DeepseekMoE: a bias changes the selection, not the weights' formula; zero-token and uneven experts", async () => {
  await gpu();
  const c: Case = {
    d: 12,
    e: 6,
    k: 2,
    i: 5,
    n: 17,
    shared: 1,
    normalize: true,
    scale: 2.5,
    seed: 77,
  };
  // A large bias on experts 4 and 5 routes every token there: experts 0..3 get zero tokens.
  await forwardCheck(c, [0, 0, 0, 0, 5, 5]);
  const { moe, ref } = build(c);
  setBias(moe, ref, [0, 0, 0, 0, 5, 5]);
  const x = mg.tensor(f32(inputs(c)), { shape: [c.n, c.d] });
  const st1 = new mg.nn.StepStats();
  const y = moe.forward(x, { stats: st1 });
  assert.deepEqual(Array.from(await st1.moe(moe)!.load.data()), [0, 0, 0, 0, 17, 17]);
  st1.dispose();
  // the weights still come from the unbiased scores: compare with the reference's formula
  const s = refScores(inputs(c), ref);
  const biased = refRoute(s, ref.bias, c.e, c.k, Math.fround(c.scale), true);
  for (let t = 0; t < c.n; t++) {
    const a = s[t * c.e + 4], b = s[t * c.e + 5];
    const w4 = biased.w[t * 2 + (biased.idx[t * 2] === 4 ? 0 : 1)];
    assert.ok(Math.abs(w4 - (a / (a + b)) * Math.fround(c.scale)) < 1e-12);
  }
  // very uneven: one expert favoured (all tokens), the rest share the second slot
  setBias(moe, ref, [0, 0, 0, 3, 0, 0]);
  const st2 = new mg.nn.StepStats();
  const y2 = moe.forward(x, { stats: st2 });
  const want = refMoe(inputs(c), ref);
  assertNear(await y2.data(), want.y, FWD, "uneven");
  assert.deepEqual(Array.from(await st2.moe(moe)!.load.data()), Array.from(want.load));
  st2.dispose();
  assert.equal(want.load[3], c.n);
  for (const t of [x, y, y2]) t.dispose();
  moe.dispose();
});

Deno.test("DeepseekMoE gradients (x, gate, experts, shared) vs float64 finite differences (rtol 1e-3)", async () => {
  await gpu();
  const arb = arbCase.map((c) => ({ ...c, n: Math.min(c.n, 9) }));
  await check(arb, async (c) => {
    const { moe, ref } = build(c);
    const xv = inputs(c);
    const gv = Float64Array.from(seededValues(c.n * c.d, c.seed + 3, -1, 1));
    const x = mg.tensor(f32(xv), { shape: [c.n, c.d], requiresGrad: true });
    const g = mg.tensor(f32(gv), { shape: [c.n, c.d] });
    const y = moe.forward(x);
    y.backward(g);
    const lossOf = (w: MoeRefWeights, xx: Float64Array) => {
      const out = refMoe(xx, w).y;
      let l = 0;
      for (let j = 0; j < out.length; j++) l += out[j] * gv[j];
      return l;
    };
    const numeric = (key: keyof MoeRefWeights) =>
      numericGrad(
        (v) => lossOf({ ...ref, [key]: v.data }, xv),
        new NDArray(ref[key] as Float64Array, [
          (ref[key] as Float64Array).length,
        ]),
      ).data;
    try {
      assertNear(
        await x.grad!.data(),
        numericGrad((v) => lossOf(ref, v.data), new NDArray(xv, [xv.length])).data,
        GRAD,
        "dx",
      );
      assertNear(await moe.gate.weight.grad!.data(), numeric("gate"), GRAD, "dgate");
      assertNear(await moe.experts.gateProj.grad!.data(), numeric("wg"), GRAD, "dwg");
      assertNear(await moe.experts.upProj.grad!.data(), numeric("wu"), GRAD, "dwu");
      assertNear(await moe.experts.downProj.grad!.data(), numeric("wd"), GRAD, "dwd");
      if (moe.sharedExperts) {
        assertNear(
          await moe.sharedExperts.gateProj.weight.grad!.data(),
          numeric("sg"),
          GRAD,
          "dsg",
        );
        assertNear(
          await moe.sharedExperts.downProj.weight.grad!.data(),
          numeric("sd"),
          GRAD,
          "dsd",
        );
      }
      assert.equal(moe.gate.eScoreCorrectionBias.grad, null, "no gradient to the bias");
      assert.equal(moe.gate.eScoreCorrectionBias.requiresGrad, false);
    } finally {
      x.zeroGrad();
      for (const t of [x, g, y]) t.dispose();
      moe.dispose();
    }
  }, 10);
});

Deno.test("DeepseekMoE.updateBias: bias += γ·sign(mean load − load), exact in f32", async () => {
  await gpu();
  const c: Case = { d: 8, e: 5, k: 2, i: 4, n: 11, shared: 0, normalize: true, scale: 1, seed: 5 };
  const { moe, ref } = build(c);
  const b0 = [0.25, -0.125, 0, 0.5, 1e-3];
  setBias(moe, ref, b0);
  const x = mg.tensor(f32(inputs(c)), { shape: [c.n, c.d] });
  const stats = new mg.nn.StepStats();
  const y = moe.forward(x, { stats });
  const load = Array.from(await stats.moe(moe)!.load.data());
  moe.updateBias(stats, 0.01);
  stats.dispose();
  const mean = (c.n * c.k) / c.e;
  const want = b0.map((b, j) =>
    Math.fround(Math.fround(b) + Math.fround(0.01) * Math.sign(mean - load[j]))
  );
  assert.deepEqual(Array.from(await moe.gate.eScoreCorrectionBias.data()), want);
  // a load exactly at the mean leaves the bias unchanged: 10 pairs over 5 experts, 2 each
  const bias = mg.tensor([1, 2, 3, 4, 5]);
  const ld = mg.tensor(new Int32Array([2, 2, 0, 5, 1]));
  moeBiasUpdate(bias, ld, 10, 0.5);
  assert.deepEqual(Array.from(await bias.data()), [1, 2, 3.5, 3.5, 5.5]);
  const empty = new mg.nn.StepStats();
  const fresh = new DeepseekMoE(makeConfig({}));
  assert.throws(() => fresh.updateBias(empty), /updateBias.*no forward/);
  // evaluation forwards record nothing
  fresh.eval();
  mg.noGrad(() => fresh.forward(mg.zeros([2, fresh.config.hidden_size]), { stats: empty }))
    .dispose();
  assert.equal(empty.moe(fresh), null, "eval forward recorded");
  assert.throws(() => fresh.updateBias(empty), /updateBias.*no forward/);
  fresh.dispose();
  empty.dispose();
  for (const t of [x, y, bias, ld]) t.dispose();
  moe.dispose();
});

Deno.test("DeepseekMoE aux loss: value and gate gradient vs float64 (rtol 1e-4 / 1e-3); null when α = 0", async () => {
  await gpu();
  const c: Case = {
    d: 10,
    e: 6,
    k: 2,
    i: 4,
    n: 12,
    shared: 1,
    normalize: true,
    scale: 2,
    seed: 31,
  };
  const alpha = 0.01;
  const { moe, ref } = build(c, alpha);
  const xv = inputs(c);
  const x = mg.tensor(f32(xv), { shape: [3, 4, c.d] });
  const auxLosses: mg.Tensor[] = [];
  const stats = new mg.nn.StepStats();
  const y = moe.forward(x, { stats, auxLosses });
  assert.deepEqual(y.shape, [3, 4, c.d]);
  assert.equal(auxLosses.length, 1);
  const aux = auxLosses[0];
  assertNear([await aux.item()], [refAuxLoss(xv, ref, 3, alpha)], FWD, "aux");
  assert.equal(await stats.moe(moe)!.auxLoss!.item(), await aux.item(), "recorded aux value");
  assert.equal(stats.moe(moe)!.auxLoss!.requiresGrad, false, "recorded aux is detached");
  stats.dispose();
  aux.backward();
  aux.dispose();
  const num = numericGrad(
    (v) => refAuxLoss(xv, { ...ref, gate: v.data }, 3, alpha),
    new NDArray(ref.gate, [ref.gate.length]),
  ).data;
  assertNear(await moe.gate.weight.grad!.data(), num, { rtol: 1e-3, atol: 1e-7 }, "daux/dgate");
  moe.eval();
  const y2 = moe.forward(x, { auxLosses });
  assert.equal(auxLosses.length, 1, "no aux loss in eval mode");
  const { moe: m0 } = build(c, 0);
  const y3 = m0.forward(x, { auxLosses });
  assert.equal(auxLosses.length, 1, "no aux loss when α = 0");
  for (const t of [x, y, y2, y3]) t.dispose();
  moe.zeroGrad();
  moe.dispose();
  m0.dispose();
});

Deno.test("DeepseekMoE state dict: HF per-expert names, views of the stacked weights, safetensors round trip", async () => {
  await gpu();
  const c: Case = { d: 8, e: 4, k: 2, i: 6, n: 5, shared: 1, normalize: true, scale: 2.5, seed: 3 };
  const { moe } = build(c);
  setBias(moe, build(c).ref, [0.1, -0.2, 0.3, 0]);
  const sd = moe.stateDict();
  const names = [...sd.keys()].sort();
  const want = ["gate.weight", "gate.e_score_correction_bias"];
  for (let e = 0; e < c.e; e++) {
    for (const p of ["gate_proj", "up_proj", "down_proj"]) want.push(`experts.${e}.${p}.weight`);
  }
  for (const p of ["gate_proj", "up_proj", "down_proj"]) want.push(`shared_experts.${p}.weight`);
  assert.deepEqual(names, want.sort());
  assert.deepEqual(sd.get("experts.2.gate_proj.weight")!.shape, [c.i, c.d]);
  assert.deepEqual(sd.get("experts.3.down_proj.weight")!.shape, [c.d, c.i]);
  const stacked = await moe.experts.downProj.data();
  const e3 = await sd.get("experts.3.down_proj.weight")!.data();
  assert.deepEqual(Array.from(e3), Array.from(stacked.slice(3 * c.d * c.i)));
  // namedParameters keeps the stacked tensors (what optimizers update)
  const pnames = [...moe.namedParameters()].map(([n]) => n);
  assert.ok(pnames.includes("experts.gate_proj") && !pnames.some((n) => n.includes("experts.0")));
  // round trip through bytes into a differently seeded block: bit-identical tensors and outputs
  const bytes = await mg.io.serializeSafetensors(moe);
  const loaded = mg.io.parseSafetensors(bytes);
  const other = new DeepseekMoE(moe.config, { seed: 999 });
  other.loadStateDict(loaded);
  for (const [n, t] of other.stateDict()) {
    assert.deepEqual(Array.from(await t.data()), Array.from(await sd.get(n)!.data()), n);
  }
  const x = mg.tensor(f32(inputs(c)), { shape: [c.n, c.d] });
  const y1 = moe.forward(x);
  const y2 = other.forward(x);
  assert.deepEqual(Array.from(await y2.data()), Array.from(await y1.data()));
  // a parent module's state dict has the per-expert names too
  class Parent extends mg.nn.Module {
    readonly mlp = this.module("mlp", new DeepseekMoE(moe.config, { seed: 1 }));
  }
  const parent = new Parent();
  const pn = [...parent.stateDict().keys()];
  assert.ok(pn.includes("mlp.experts.0.up_proj.weight") && !pn.includes("mlp.experts.up_proj"));
  // a wrong shape is reported by name
  const bad = new Map(loaded);
  bad.set("experts.1.up_proj.weight", mg.zeros([c.d, c.i]));
  assert.throws(() => other.loadStateDict(bad), /experts\.1\.up_proj\.weight/);
  bad.get("experts.1.up_proj.weight")!.dispose();
  for (const t of loaded.values()) t.dispose();
  for (const t of [x, y1, y2]) t.dispose();
  parent.dispose();
  other.dispose();
  moe.dispose();
});

Deno.test("DeepseekMoE: memory flat over repeated forward + backward", async () => {
  await gpu();
  const c: Case = { d: 16, e: 6, k: 3, i: 8, n: 20, shared: 1, normalize: true, scale: 2, seed: 8 };
  const { moe } = build(c, 1e-3);
  const x = mg.tensor(f32(inputs(c)), { shape: [2, 10, c.d], requiresGrad: true });
  const step = () => {
    const auxLosses: mg.Tensor[] = [];
    const stats = new mg.nn.StepStats({ indices: true });
    const y = moe.forward(x, { stats, auxLosses });
    const sq = y.square();
    const s = sq.sum();
    const l = s.add(auxLosses[0]);
    l.backward();
    moe.updateBias(stats, 1e-3);
    stats.dispose();
    for (const t of [y, sq, s, l, ...auxLosses]) t.dispose();
    moe.zeroGrad();
    x.zeroGrad();
  };
  step();
  await mg.sync();
  const before = mg.memory();
  for (let r = 0; r < 3; r++) step();
  await mg.sync();
  const after = mg.memory();
  assert.equal(after.inUseBytes, before.inUseBytes);
  assert.equal(after.liveTensors, before.liveTensors);
  x.dispose();
  moe.dispose();
});

Deno.test("MoE errors name the op and the shapes", async () => {
  await gpu();
  const cfg = makeConfig({ hidden_size: 8, n_routed_experts: 4, num_experts_per_tok: 2 });
  const moe = new DeepseekMoE(cfg, { seed: 1 });
  const bad = mg.zeros([3, 7]);
  assert.throws(() => moe.forward(bad), /DeepseekMoE\.forward.*\[3, 7\]/);
  assert.throws(
    () => new DeepseekMoE({ ...cfg, num_experts_per_tok: 5 }),
    /DeepseekMoE[\s\S]*num_experts_per_tok 5 exceeds/,
  );
  const s = mg.zeros([3, 4]);
  const b = mg.zeros([5]);
  assert.throws(() => moeRoute(s, b, 2), /moeRoute.*bias/);
  const b4 = mg.zeros([4]);
  assert.throws(() => moeRoute(s, b4, 5), /moeRoute.*k must be/);
  assert.throws(() => moePlan(s, 4), /moePlan.*i32/);
  const a = mg.zeros([3, 8]);
  const w = mg.zeros([2, 4, 7]);
  const off = mg.tensor(new Int32Array([0, 1, 3]));
  assert.throws(() => groupedMatmul(a, w, off), /groupedMatmul.*in = a's columns/);
  assert.ok(new MoEGate(4, 8).weight.shape[0] === 4);
  for (const t of [bad, s, b, b4, a, w, off]) t.dispose();
  moe.dispose();
});
