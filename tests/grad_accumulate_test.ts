/**
 * Gradient accumulation folded into the kernels that produce gradients (core/autograd.ts
 * `GradPriors`, ops/grad_prior.ts): when a tensor feeds several ops, the vjps of matmul (dA),
 * the grouped MoE product, RMSNorm (dx), moeDispatch (gather-sum) and slice add the gradient
 * accumulated so far in their epilogue instead of a separate `add` dispatch.
 *
 * Each graph runs twice: fused (one tensor x used by every branch) and unfused (a separate leaf
 * per use, the same values, so no accumulation happens inside backward), and the fused
 * gradient must equal the sum of the unfused ones bit for bit (the epilogue adds prior + own in
 * f32 exactly as `add` does), with fewer dispatches: no `add` at all where every accumulation
 * folds. Where the unfused reference sums in another order (MoE), a tight tolerance.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { groupedMatmul, moeDispatch, moePlan } from "../ops/moe.ts";
import { CPU_MATMUL_CONFIG, GPU_MATMUL_CONFIG } from "../ops/matmul.ts";
import { assertClose, countDispatches, f32Bits, gpu, seededTensor, seededValues } from "./util.ts";

type Use = (x: mg.Tensor) => mg.Tensor;

const consts = seededTensor;
const bits = f32Bits;

/** Σ c ⊙ y: a weighted scalar loss, so every element gets a distinct gradient. */
function wsum(y: mg.Tensor, seed: number): mg.Tensor {
  return y.mul(consts(y.shape, seed)).sum();
}

interface Run {
  grad: number[];
  counts: Map<string, number>;
  total: number;
}

function total(c: Map<string, number>): number {
  let s = 0;
  for (const v of c.values()) s += v;
  return s;
}

/**
 * Fused: one tensor (a leaf, or x·1 when `intermediate`) feeds every use; the loss is
 * uses[0] + uses[1] + … (the first use's vjps run last, so it sees the others' gradient as
 * its prior). Unfused: one leaf per use, and the reference is Σ of their gradients in the
 * order backward accumulates (last use first).
 */
async function fusedVsUnfused(
  values: Float32Array,
  shape: number[],
  uses: Use[],
  intermediate: boolean,
): Promise<{ fused: Run; unfused: Run }> {
  const run = async (leaves: mg.Tensor[]): Promise<Run> => {
    const hs = leaves.map((x) => (intermediate ? x.mul(1) : x));
    const terms = uses.map((u, i) => u(hs[Math.min(i, hs.length - 1)]));
    const loss = terms.reduce((a, b) => a.add(b));
    const counts = countDispatches(() => loss.backward());
    let g = leaves[leaves.length - 1].grad!;
    for (let i = leaves.length - 2; i >= 0; i--) g = g.add(leaves[i].grad!);
    return { grad: Array.from((await g.data()) as Float32Array), counts, total: total(counts) };
  };
  const leaf = () => mg.tensor(values, { shape, requiresGrad: true });
  return { fused: await run([leaf()]), unfused: await run(uses.map(leaf)) };
}

function assertFolded(fused: Run, unfused: Run, intermediate: boolean, uses: number): void {
  assert.equal(fused.counts.get("add") ?? 0, 0, `an add was dispatched: ${[...fused.counts]}`);
  // Unfused runs one x·1 per use (intermediate) and no accumulation add: fused saves every add.
  const extra = intermediate ? uses - 1 : 0;
  assert.equal(
    fused.total,
    unfused.total - extra,
    `${[...fused.counts]} vs ${[...unfused.counts]}`,
  );
}

for (const intermediate of [false, true]) {
  const kind = intermediate ? "an intermediate" : "a leaf";
  Deno.test(`grad accumulate: ${kind} feeding two matmuls (2-D and batched) = unfused, bit for bit, no add`, async () => {
    await gpu();
    for (const shape of [[6, 8], [2, 5, 8]]) {
      const w1 = consts([8, 5], 1);
      const w2 = consts([8, 3], 2);
      const uses: Use[] = [(h) => wsum(h.matmul(w1), 3), (h) => wsum(h.matmul(w2), 4)];
      const n = shape.reduce((a, b) => a * b, 1);
      const { fused, unfused } = await fusedVsUnfused(
        seededValues(n, 5, -1, 1),
        shape,
        uses,
        intermediate,
      );
      assert.deepEqual(bits(fused.grad), bits(unfused.grad), `shape ${shape}`);
      assertFolded(fused, unfused, intermediate, 2);
    }
  });

  Deno.test(`grad accumulate: ${kind} feeding an RMSNorm and a residual = unfused, bit for bit, no add`, async () => {
    await gpu();
    for (const d of [16, 48]) { // the short (one thread per row) and the workgroup-per-row kernel
      const w = consts([d], 6);
      const wo = consts([d, d], 7);
      const uses: Use[] = [
        (h) => wsum(mg.nn.rmsNorm(h, w).matmul(wo), 8),
        (h) => wsum(h, 9),
      ];
      const { fused, unfused } = await fusedVsUnfused(
        seededValues(5 * d, 10, -2, 2),
        [5, d],
        uses,
        intermediate,
      );
      assert.deepEqual(bits(fused.grad), bits(unfused.grad), `d ${d}`);
      assertFolded(fused, unfused, intermediate, 2);
    }
  });

  Deno.test(`grad accumulate: ${kind} read by two slices (one strided) = unfused, bit for bit, no add`, async () => {
    await gpu();
    const uses: Use[] = [
      (h) => wsum(h.slice(1, 0, 6), 11),
      (h) => wsum(h.slice(1, 3, 10, 2), 12),
      (h) => wsum(h.slice(0, 1, 3), 13),
    ];
    const { fused, unfused } = await fusedVsUnfused(
      seededValues(40, 14, -1, 1),
      [4, 10],
      uses,
      intermediate,
    );
    assert.deepEqual(bits(fused.grad), bits(unfused.grad));
    assert.equal(fused.counts.get("slice_grad"), 3);
    assertFolded(fused, unfused, intermediate, 3);
  });
}

Deno.test("grad accumulate: x·x and x @ x (one tensor twice among a node's inputs) = unfused, bit for bit", async () => {
  await gpu();
  const v = seededValues(36, 15, -1, 1);
  // mul(x, x): both gradients accumulate through add (mul does not fold).
  const sq = await fusedVsUnfusedPair(v, (a, b) => wsum(a.mul(b), 16), null);
  assert.deepEqual(bits(sq.fused), bits(sq.unfused));
  // x @ x + x @ W: matmul's first input takes the prior from x @ W, the second (the same
  // tensor) must not: it accumulates through one add.
  const w = consts([6, 6], 17);
  const mm = await fusedVsUnfusedPair(
    v,
    (a, b) => wsum(a.matmul(b), 18),
    (c) => wsum(c.matmul(w), 19),
  );
  assert.deepEqual(bits(mm.fused), bits(mm.unfused));
  assert.equal(mm.adds, 1, "x @ x: one add for the second occurrence");
});

/**
 * Fused: loss = pair(x, x) [+ other(x)]; unfused: pair(a, b) [+ other(c)], reference
 * (c.grad + a.grad) + b.grad (backward's order: other's gradient first, then the pair's
 * first input, then its second).
 */
async function fusedVsUnfusedPair(
  v: Float32Array,
  pair: (a: mg.Tensor, b: mg.Tensor) => mg.Tensor,
  other: Use | null,
): Promise<{ fused: number[]; unfused: number[]; adds: number }> {
  {
    const leaf = () => mg.tensor(v, { shape: [6, 6], requiresGrad: true });
    const x = leaf();
    let loss = pair(x, x);
    if (other) loss = loss.add(other(x));
    const counts = countDispatches(() => loss.backward());
    const [a, b, c] = [leaf(), leaf(), leaf()];
    let l2 = pair(a, b);
    if (other) l2 = l2.add(other(c));
    l2.backward();
    const ref = (other ? c.grad!.add(a.grad!) : a.grad!).add(b.grad!);
    return {
      fused: Array.from((await x.grad!.data()) as Float32Array),
      unfused: Array.from((await ref.data()) as Float32Array),
      adds: counts.get("add") ?? 0,
    };
  }
}

Deno.test("grad accumulate: x + rmsNorm(x) (the prior aliases the norm's own gradient) stays correct, unfused", async () => {
  await gpu();
  const d = 40;
  const w = consts([d], 20);
  const v = seededValues(3 * d, 21, -1, 1);
  {
    const x = mg.tensor(v, { shape: [3, d], requiresGrad: true });
    const loss = wsum(x.add(mg.nn.rmsNorm(x, w)), 22);
    const counts = countDispatches(() => loss.backward());
    const a = mg.tensor(v, { shape: [3, d], requiresGrad: true });
    const b = mg.tensor(v, { shape: [3, d], requiresGrad: true });
    wsum(a.add(mg.nn.rmsNorm(b, w)), 22).backward();
    const ref = a.grad!.add(b.grad!);
    assert.deepEqual(
      bits((await x.grad!.data()) as Float32Array),
      bits((await ref.data()) as Float32Array),
    );
    // The residual's gradient is the add's output gradient itself, which the norm reads as dy:
    // folding would cost the runtime an alias copy, so backward adds instead.
    assert.equal(counts.get("add"), 1);
    assert.equal(counts.get("alias_copy") ?? 0, 0);
  }
});

Deno.test("grad accumulate: a leaf used twice, backward twice with retainGraph (leaf.grad is never a prior)", async () => {
  await gpu();
  const w1 = consts([8, 5], 23);
  const w2 = consts([8, 4], 24);
  {
    const x = mg.tensor(seededValues(48, 25, -1, 1), { shape: [6, 8], requiresGrad: true });
    const loss = wsum(x.matmul(w1), 26).add(wsum(x.slice(1, 2, 7).matmul(w2.slice(0, 0, 5)), 27))
      .add(wsum(x, 28));
    const c1 = countDispatches(() => loss.backward(undefined, { retainGraph: true }));
    const once = Array.from((await x.grad!.data()) as Float32Array);
    const c2 = countDispatches(() => loss.backward());
    const twice = Array.from((await x.grad!.data()) as Float32Array);
    assert.equal(c1.get("add") ?? 0, 0, `first pass: ${[...c1]}`);
    // The second pass folds the same way, then adds its result to x.grad once.
    assert.equal(c2.get("add"), 1, `second pass: ${[...c2]}`);
    assert.deepEqual(bits(twice), bits(once.map((g) => 2 * g)));
  }
});

Deno.test("grad accumulate: MoE dispatch + two grouped products + a dense use ≈ unfused (rtol 1e-5), no add", async () => {
  await gpu();
  const [n, d, e, k, f] = [12, 8, 4, 2, 6];
  const ids = Int32Array.from({ length: n * k }, (_, i) => (i * 7 + (i >> 1)) % e);
  const wg = consts([e, f, d], 30);
  const wu = consts([e, f, d], 31);
  const wr = consts([d, 5], 32);
  const v = seededValues(n * d, 33, -1, 1);
  {
    const plan = moePlan(mg.tensor(ids, { shape: [n, k] }), e);
    const experts = (a: mg.Tensor, b: mg.Tensor) => {
      const [xa, xb] = [moeDispatch(a, plan), a === b ? null : moeDispatch(b, plan)];
      return wsum(groupedMatmul(xa, wg, plan.offsets), 34)
        .add(wsum(groupedMatmul(xb ?? xa, wu, plan.offsets), 35));
    };
    const leaf = () => mg.tensor(v, { shape: [n, d], requiresGrad: true });
    const x = leaf();
    const loss = experts(x, x).add(wsum(x.matmul(wr), 36));
    const counts = countDispatches(() => loss.backward());
    const [a, b, c] = [leaf(), leaf(), leaf()];
    experts(a, b).add(wsum(c.matmul(wr), 36)).backward();
    const ref = a.grad!.add(b.grad!).add(c.grad!);
    assertClose(
      (await x.grad!.data()) as Float32Array,
      (await ref.data()) as Float32Array,
      { rtol: 1e-5, atol: 1e-6 },
      "x.grad",
    );
    assert.equal(counts.get("add") ?? 0, 0, `${[...counts]}`);
    assert.equal(counts.get("moe_gather_sum"), 1);
  }
});

/**
 * Calls a node's vjp by hand with a prior for input 0 that is a contiguous view at a non-zero
 * offset (rows 1.. of a larger tensor), and checks the result is add(prior, own) bit for bit
 * and that the vjp absorbed it.
 */
async function checkPriorAtOffset(what: string, y: mg.Tensor, x: mg.Tensor): Promise<void> {
  {
    const node = y.gradFn!;
    const needs = node.inputs.map((t) => t === x);
    const g = consts(y.shape, 40);
    const rows = x.shape[0];
    const big = consts([rows + 1, ...x.shape.slice(1)], 41).cast(x.dtype);
    const prior = big.slice(0, 1);
    assert.ok(prior.offset > 0 && prior.isContiguous);
    const absorbed: number[] = [];
    const priors: mg.GradPriors = {
      prior: (j) => (j === 0 ? prior : null),
      absorb: (j) => void absorbed.push(j),
    };
    const [fused] = node.vjp!(g.cast(y.dtype), needs, node.saved, priors);
    const [own] = node.vjp!(g.cast(y.dtype), needs, node.saved);
    const ref = prior.add(own!);
    assert.deepEqual(absorbed, [0], `${what}: absorbed`);
    assert.deepEqual(
      bits((await fused!.cast("f32").data()) as Float32Array),
      bits((await ref.cast("f32").data()) as Float32Array),
      what,
    );
  }
}

Deno.test("grad accumulate: epilogues read a prior at a non-zero offset = add(prior, own), bit for bit (f32, f16)", async () => {
  const info = await gpu();
  for (const dtype of (info.f16 ? ["f32", "f16"] : ["f32"]) as mg.DType[]) {
    const x = consts([6, 40], 42).cast(dtype).requiresGrad_();
    await checkPriorAtOffset(`matmul ${dtype}`, x.matmul(consts([40, 7], 43).cast(dtype)), x);
    await checkPriorAtOffset(`rmsNorm ${dtype}`, mg.nn.rmsNorm(x, consts([40], 44).cast(dtype)), x);
    await checkPriorAtOffset(`slice ${dtype}`, x.slice(1, 3, 30, 3), x);
    // N a multiple of 4: the matmul stores (and reads the prior) as vec4.
    await checkPriorAtOffset(`matmul N=8 ${dtype}`, x.matmul(consts([40, 8], 45).cast(dtype)), x);
    // Rows of 30: RMSNorm's backward reads scalars (40 above: vec4).
    const x30 = consts([6, 30], 46).cast(dtype).requiresGrad_();
    await checkPriorAtOffset(
      `rmsNorm n=30 ${dtype}`,
      mg.nn.rmsNorm(x30, consts([30], 47).cast(dtype)),
      x30,
    );
    x30.dispose();
    x.dispose();
  }
  const ids = Int32Array.from({ length: 10 }, (_, i) => (i * 3) % 4);
  const plan = moePlan(mg.tensor(ids, { shape: [5, 2] }), 4);
  const a = consts([5, 8], 45).requiresGrad_();
  await checkPriorAtOffset("moeDispatch", moeDispatch(a, plan), a);
  const r = consts([10, 8], 46).requiresGrad_();
  await checkPriorAtOffset(
    "groupedMatmul",
    groupedMatmul(r, consts([4, 3, 8], 47), plan.offsets),
    r,
  );
});

Deno.test("grad accumulate: the matmul epilogue under every tile configuration (shared, direct, skinny) = unfused, bit for bit", async () => {
  await gpu();
  for (const config of [GPU_MATMUL_CONFIG, CPU_MATMUL_CONFIG]) {
    const previous = mg.setMatmulConfig(config);
    try {
      for (const shape of [[70, 33], [3, 33]]) { // full tiles, and a skinny (M ≤ 4) product
        const w1 = consts([33, 20], 50);
        const w2 = consts([33, 9], 51);
        const uses: Use[] = [(h) => wsum(h.matmul(w1), 52), (h) => wsum(h.matmul(w2), 53)];
        const { fused, unfused } = await fusedVsUnfused(
          seededValues(shape[0] * 33, 54, -1, 1),
          shape,
          uses,
          false,
        );
        assert.deepEqual(bits(fused.grad), bits(unfused.grad), `shared ${config.shared} ${shape}`);
        assertFolded(fused, unfused, false, 2);
      }
    } finally {
      mg.setMatmulConfig(previous);
    }
  }
});
