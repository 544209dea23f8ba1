/**
 * Optimizer base, SGD, AdamW and the learning-rate schedules.
 *
 * Tolerances: the fused kernels do the float64 reference's arithmetic in f32, a handful of
 * operations per element per step, so each step adds a few ulp (~1e-7 relative) to values of
 * size O(1); over 4 steps we check 1e-6 relative + 1e-6 absolute. AdamW's step size is lr
 * per element regardless of the gradient's scale, so a wrong bias correction or ε placement
 * shows at the 1e-3 level (lr = 1e-2).
 */
import * as mg from "../mod.ts";
import {
  AdamW,
  type BaseOptions,
  cosineSchedule,
  disposeStateDict,
  linearWarmup,
  type Optimizer,
  SGD,
  wsdSchedule,
} from "../optim/mod.ts";
import {
  assertClose,
  check,
  countDispatches,
  f32,
  fc,
  gpu,
  param,
  perKernel,
  seededValues,
  setGrad,
} from "./util.ts";
import { adamwStepRef, sgdStepRef } from "./reference/optim.ts";
import { type AdamWItem, adamwUpdateMany } from "../ops/adamw_multi.ts";
import { adamwUpdate } from "../ops/optim_update.ts";
import assert from "node:assert/strict";

await gpu();

const arbShape = fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 3 });

const isErr = (re: RegExp) => (e: Error) => e instanceof mg.MoongradError && re.test(e.message);

Deno.test("SGD matches torch.optim.SGD in float64 over 4 steps (momentum, Nesterov, wd; 1e-6)", async () => {
  await check(
    fc.record({
      shape: arbShape,
      momentum: fc.constantFrom(0, 0.9),
      dampening: fc.constantFrom(0, 0.3),
      wd: fc.constantFrom(0, 0.05),
      nesterov: fc.boolean(),
      seed: fc.integer({ min: 1, max: 1e6 }),
    }),
    async ({ shape, momentum, dampening, wd, nesterov, seed }) => {
      if (nesterov && (momentum === 0 || dampening !== 0)) nesterov = false;
      const n = shape.reduce((a, b) => a * b, 1);
      const w = seededValues(n, seed);
      const p = param(w, shape);
      const opt = new SGD([p], { lr: 0.1, momentum, dampening, weightDecay: wd, nesterov });
      const ref = Float64Array.from(w);
      const st = { lr: 0.1, momentum, dampening, weightDecay: wd, nesterov, buf: null };
      for (let t = 0; t < 4; t++) {
        const g = seededValues(n, seed + 17 * (t + 1), -2, 2);
        setGrad(p, g);
        await opt.step();
        sgdStepRef(ref, g, st);
      }
      assertClose(await p.data(), ref, { rtol: 1e-6, atol: 1e-6 }, `SGD ${shape}`);
      opt.dispose();
      p.zeroGrad();
      p.dispose();
    },
    15,
  );
});

Deno.test("AdamW matches torch.optim.AdamW in float64 over 4 steps (bias correction, wd; 1e-6)", async () => {
  await check(
    fc.record({
      shape: arbShape,
      b1: fc.constantFrom(0.9, 0.8),
      b2: fc.constantFrom(0.999, 0.95),
      eps: fc.constantFrom(1e-8, 1e-3),
      wd: fc.constantFrom(0, 0.1),
      gscale: fc.constantFrom(1e-4, 1, 100),
      seed: fc.integer({ min: 1, max: 1e6 }),
    }),
    async ({ shape, b1, b2, eps, wd, gscale, seed }) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const w = seededValues(n, seed);
      const p = param(w, shape);
      const opt = new AdamW([p], { lr: 1e-2, betas: [b1, b2], eps, weightDecay: wd });
      const ref = Float64Array.from(w);
      const st = {
        lr: 1e-2,
        beta1: b1,
        beta2: b2,
        eps,
        weightDecay: wd,
        t: 0,
        m: new Float64Array(n),
        v: new Float64Array(n),
      };
      for (let t = 0; t < 4; t++) {
        const g = seededValues(n, seed + 31 * (t + 1), -gscale, gscale);
        setGrad(p, g);
        await opt.step();
        adamwStepRef(ref, g, st);
      }
      assertClose(await p.data(), ref, { rtol: 1e-6, atol: 1e-6 }, `AdamW ${shape}`);
      opt.dispose();
      p.zeroGrad();
      p.dispose();
    },
    15,
  );
});

Deno.test("param groups: own hyper-parameters, names from a Module, identity kept, no leak", async () => {
  const lin = new mg.nn.Linear(4, 3, { seed: 1 });
  const other = param([1, 2], [2]);
  const opt = new AdamW([
    { params: lin, name: "lin", lr: 0 },
    { params: [["extra", other]], lr: 0.1, weightDecay: 0 },
  ], { lr: 1e-3 });
  assert.deepEqual(opt.groups.map((g) => g.names), [["weight", "bias"], ["extra"]]);
  assert.equal(opt.groups[0].options.lr, 0);
  assert.equal(opt.groups[1].options.betas[0], 0.9);
  const w0 = await lin.weight.data();
  const weight = lin.weight;
  const steps = async () => {
    for (const [, p] of opt.namedParameters()) setGrad(p, seededValues(p.size, 3));
    await opt.step();
    opt.zeroGrad();
  };
  await steps();
  const before = mg.memory().inUseBytes;
  for (let i = 0; i < 3; i++) await steps();
  assert.equal(mg.memory().inUseBytes, before, "memory in use must stay flat across steps");
  assert.equal(lin.weight, weight, "parameters keep their identity");
  assert.deepEqual(await lin.weight.data(), w0, "lr 0 group unchanged");
  // lr 0.1, 4 Adam steps of a constant gradient: each moves by ≈ lr·sign(g).
  const moved = await other.data();
  const sign = Math.sign(seededValues(2, 3)[0]);
  assert.ok(Math.abs(moved[0] - (1 - 0.4 * sign)) < 1e-3, `extra moved to ${moved[0]}`);
  assert.equal(opt.stepCount, 4);
  opt.dispose();
  lin.dispose();
  other.dispose();
});

Deno.test("a parameter without a gradient is skipped and its step count does not advance", async () => {
  const a = param([1, 2, 3], [3]);
  const b = param([4, 5], [2]);
  const opt = new AdamW([a, b], { lr: 0.1 });
  setGrad(a, [1, 1, 1]);
  await opt.step();
  assert.deepEqual(Array.from(await b.data()), [4, 5]);
  const sd = opt.stateDict();
  assert.deepEqual(sd.paramSteps, { "0": 1 });
  assert.deepEqual([...sd.state.keys()], ["0.exp_avg", "0.exp_avg_sq"]);
  disposeStateDict(sd);
  opt.dispose();
  a.zeroGrad();
  a.dispose();
  b.dispose();
});

Deno.test("stateDict round trip resumes SGD and AdamW bit-exactly (schedule positioned too)", async () => {
  for (
    const make of [
      (ps: mg.Tensor[]) =>
        new AdamW(ps, { lr: cosineSchedule({ peak: 1e-2, warmupSteps: 2, totalSteps: 8 }) }),
      (ps: mg.Tensor[]) => new SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true }),
    ]
  ) {
    const shapes = [[3, 5], [7]];
    const init = shapes.map((s, i) => seededValues(s.reduce((x, y) => x * y), 10 + i));
    const ps = shapes.map((s, i) => param(init[i], s));
    const grads = (t: number) =>
      ps.forEach((p, i) => setGrad(p, seededValues(p.size, 100 * t + i, -1, 1)));
    const opt = make(ps);
    for (let t = 0; t < 3; t++) {
      grads(t);
      await opt.step();
    }
    const sd = opt.stateDict();
    const mid = await Promise.all(ps.map((p) => p.data()));
    const run = async (o: Optimizer<BaseOptions>) => {
      for (let t = 3; t < 6; t++) {
        grads(t);
        await o.step();
      }
      return Promise.all(ps.map((p) => p.data()));
    };
    const straight = await run(opt);
    ps.forEach((p, i) => {
      const v = f32(mid[i], p.shape);
      p.assign(v);
      v.dispose();
    });
    const fresh = make(ps);
    fresh.loadStateDict(sd);
    assert.equal(fresh.stepCount, 3);
    const resumed = await run(fresh);
    resumed.forEach((r, i) => assert.deepEqual(r, straight[i], `${opt.kind} param ${i}`));
    disposeStateDict(sd);
    [opt, fresh].forEach((o) => o.dispose());
    ps.forEach((p) => (p.zeroGrad(), p.dispose()));
  }
});

Deno.test("loadStateDict from another parameter set lists every mismatch and changes nothing", async () => {
  const a = param(new Float32Array(6), [2, 3]);
  const b = param(new Float32Array(4), [4]);
  const src = new AdamW([["w", a], ["v", b]], { lr: 0.1 });
  setGrad(a, seededValues(6, 1));
  setGrad(b, seededValues(4, 2));
  await src.step();
  const sd = src.stateDict();
  const c = param(new Float32Array(6), [3, 2]);
  const d = param(new Float32Array(4), [4]);
  const dst = new AdamW([["w", c], ["u", d]], { lr: 0.1 });
  assert.throws(
    () => dst.loadStateDict(sd),
    isErr(
      /problem\(s\)[\s\S]*missing parameter u[\s\S]*unexpected parameter v[\s\S]*state w.exp_avg: expected f32 \[3, 2\], got f32 \[2, 3\]/,
    ),
  );
  assert.equal(dst.stepCount, 0);
  const sgd = new SGD([["w", a], ["v", b]], { lr: 0.1 });
  assert.throws(() => sgd.loadStateDict(sd), isErr(/kind: expected SGD, got AdamW/));
  disposeStateDict(sd);
  [src, dst, sgd].forEach((o) => o.dispose());
  [a, b, c, d].forEach((t) => (t.zeroGrad(), t.dispose()));
});

Deno.test("checkFinite: a NaN or Inf gradient rejects, names the parameter, updates nothing", async () => {
  const a = param([1, 2, 3, 4], [4]);
  const b = param([5, 6], [2]);
  const opt = new SGD([["a", a], ["b", b]], { lr: 0.1, checkFinite: true });
  // NaN and Inf from bit patterns, so no constant folding can hide them.
  const bits = new Uint32Array([0x3f800000, 0x7fc00001, 0x3f800000, 0x3f800000]);
  setGrad(a, new Float32Array(bits.buffer));
  setGrad(b, new Float32Array(new Uint32Array([0xff800000, 0]).buffer));
  await assert.rejects(() => opt.step(), isErr(/non-finite.*2 parameter\(s\): a, b/));
  assert.deepEqual(Array.from(await a.data()), [1, 2, 3, 4]);
  assert.equal(opt.stepCount, 0);
  setGrad(a, [1, 1, 1, 1]);
  setGrad(b, [1, 1]);
  await opt.step();
  assertClose(await a.data(), [0.9, 1.9, 2.9, 3.9], { rtol: 1e-6, atol: 0 }, "finite step");
  opt.dispose();
  [a, b].forEach((t) => (t.zeroGrad(), t.dispose()));
});

Deno.test("errors: dtype and shape mismatches, duplicates, non-f32 params, bad hyper-parameters", async () => {
  const p = param([1, 2, 3], [3]);
  const opt = new AdamW([["p", p]], { lr: 0.1 });
  p.grad = mg.tensor([1, 2, 3], { dtype: "i32" });
  await assert.rejects(() => opt.step(), isErr(/AdamW.*gradient of "p" is i32, parameter is f32/));
  p.zeroGrad();
  p.grad = mg.tensor([1, 2]);
  await assert.rejects(() => opt.step(), isErr(/gradient of "p" has shape \[2\], parameter \[3\]/));
  p.zeroGrad();
  const ip = mg.tensor([1, 2], { dtype: "i32" });
  assert.throws(() => new SGD([p, p], { lr: 1 }), isErr(/appears twice/));
  assert.throws(() => new SGD([ip], { lr: 1 }), isErr(/i32; only f32/));
  assert.throws(() => new SGD([p], { lr: -1 }), isErr(/lr must be/));
  assert.throws(() => new SGD([p], { lr: 1, nesterov: true }), isErr(/nesterov needs/));
  assert.throws(() => new AdamW([p], { lr: 1, betas: [1, 0.9] }), isErr(/betas/));
  assert.throws(() => new AdamW([p], { lr: 1, eps: 0 }), isErr(/eps/));
  assert.throws(() => new AdamW([1 as unknown as mg.Tensor], { lr: 1 }), isErr(/not a Tensor/));
  opt.dispose();
  p.dispose();
  ip.dispose();
});

Deno.test("schedules: linear warm-up, cosine with floor, WSD (Kimi K2 shape)", async () => {
  const w = linearWarmup({ peak: 1, warmupSteps: 4 });
  assert.deepEqual([0, 1, 3, 4, 100].map(w), [0.25, 0.5, 1, 1, 1]);
  const c = cosineSchedule({ peak: 1, warmupSteps: 2, totalSteps: 12, minLr: 0.1 });
  assert.deepEqual([0, 1, 2].map(c), [0.5, 1, 1]);
  assert.ok(Math.abs(c(7) - 0.55) < 1e-12, `midpoint ${c(7)}`);
  assert.ok(Math.abs(c(12) - 0.1) < 1e-12 && Math.abs(c(99) - 0.1) < 1e-12);
  const s = wsdSchedule({ peak: 2e-4, minLr: 2e-5, warmupSteps: 2, stableSteps: 3, decaySteps: 4 });
  const v = Array.from({ length: 11 }, (_, i) => s(i));
  assert.deepEqual(v.slice(0, 5), [1e-4, 2e-4, 2e-4, 2e-4, 2e-4]);
  assert.ok(v[5] < 2e-4 && v[5] > v[6] && v[7] > v[8], `decay ${v}`);
  assert.ok(Math.abs(v[8] - 2e-5) < 1e-15 && v[10] === v[8]);
  const lin = wsdSchedule({
    peak: 1,
    warmupSteps: 0,
    stableSteps: 0,
    decaySteps: 4,
    decay: "linear",
  });
  assert.deepEqual([0, 1, 2, 3].map(lin), [0.75, 0.5, 0.25, 0]);
  assert.throws(
    () => cosineSchedule({ peak: 1, warmupSteps: 5, totalSteps: 5 }),
    isErr(/totalSteps/),
  );
  assert.throws(
    () => wsdSchedule({ peak: 1, warmupSteps: 0, stableSteps: 1, decaySteps: 0 }),
    isErr(/decaySteps/),
  );
  // The optimizer evaluates the schedule at its step counter: SGD with g = 1 moves by lr(t).
  const p = param([0], [1]);
  const opt = new SGD([p], { lr: linearWarmup({ peak: 1, warmupSteps: 4 }) });
  for (let t = 0; t < 3; t++) {
    setGrad(p, [1]);
    await opt.step();
  }
  assertClose(await p.data(), [-(0.25 + 0.5 + 0.75)], { rtol: 1e-6, atol: 0 }, "scheduled lr");
  opt.dispose();
  p.zeroGrad();
  p.dispose();
});

Deno.test("AdamW reads strided gradients in place: a transposed-view gradient updates bit-exactly like its contiguous copy", async () => {
  const [A, B] = [5, 7];
  const w = Array.from({ length: A * B }, (_, i) => Math.sin(i + 1));
  const g = Array.from({ length: A * B }, (_, i) => Math.cos(3 * i + 1));
  const gt = new Float32Array(A * B);
  for (let a = 0; a < A; a++) for (let b = 0; b < B; b++) gt[b * A + a] = g[a * B + b];
  const out: Float32Array[] = [];
  for (const strided of [false, true]) {
    const p = mg.tensor(Float32Array.from(w), { shape: [A, B] }).keep().requiresGrad_();
    const opt = new AdamW([p], { lr: 0.01, weightDecay: 0.1 });
    for (let t = 0; t < 2; t++) {
      p.grad?.dispose();
      if (strided) {
        const base = mg.tensor(gt, { shape: [B, A] });
        p.grad = base.transpose();
        base.dispose();
        assert.ok(!p.grad.isContiguous);
      } else p.grad = mg.tensor(Float32Array.from(g), { shape: [A, B] });
      await opt.step();
    }
    out.push(await p.data() as Float32Array);
    opt.dispose();
    p.dispose();
  }
  assert.deepEqual(out[1], out[0]);
  assert.ok(out[0].some((v, i) => Math.abs(v - w[i]) > 1e-3), "the step moved the parameter");
});

Deno.test("adamwUpdateMany: vec4, scalar and strided launches = the one-parameter kernel, bit for bit", async () => {
  // Sizes that are multiples of 4 (vec4 launches), that are not (scalar), a view at an odd
  // offset (scalar), a transposed gradient (strided), more parameters than one launch takes.
  const shapes = [[8, 4], [5, 7], [12], [3, 3], [16, 8], [4, 4], [2, 6]];
  const results: Float32Array[][] = [];
  for (const many of [false, true]) {
    const rng = new mg.Rng(11);
    const vals = (n: number) => Array.from({ length: n }, () => rng.next() * 2 - 1);
    const made: mg.Tensor[] = [];
    const keep = (t: mg.Tensor) => (made.push(t), t);
    const items: AdamWItem[] = shapes.map(([a, b = 1], i) => {
      const n = a * b;
      const param = keep(mg.tensor(vals(n), { shape: [a, b] }));
      let grad: mg.Tensor;
      if (i === 3) grad = keep(keep(mg.tensor(vals(n + 1))).slice(0, 1, n + 1).reshape([a, b]));
      else if (i === 5) grad = keep(keep(mg.tensor(vals(n), { shape: [b, a] })).transpose());
      else grad = keep(mg.tensor(vals(n), { shape: [a, b] }));
      return {
        param,
        grad,
        expAvg: keep(mg.tensor(vals(n).map((v) => v / 10), { shape: [a, b] })),
        expAvgSq: keep(mg.tensor(vals(n).map((v) => v * v), { shape: [a, b] })),
        biasCorrection1: 1 - 0.9 ** 3,
        biasCorrection2: 1 - 0.999 ** 3,
      };
    });
    const shared = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
    if (many) {
      const launched = perKernel(countDispatches(() => adamwUpdateMany(items, shared)));
      for (const k of [/^adamw_multi_\d_vec4$/, /^adamw_multi_\d$/, /^adamw_multi_\d_strided$/]) {
        assert.ok(
          [...launched.keys()].some((n) => k.test(n)),
          `${k} launched (${[...launched.keys()]})`,
        );
      }
    } else {
      for (const it of items) {
        adamwUpdate(it.param, it.grad, it.expAvg, it.expAvgSq, {
          ...shared,
          biasCorrection1: it.biasCorrection1,
          biasCorrection2: it.biasCorrection2,
        });
      }
    }
    const out: Float32Array[] = [];
    for (const it of items) {
      for (const t of [it.param, it.expAvg, it.expAvgSq]) out.push(await t.data() as Float32Array);
    }
    results.push(out);
    made.forEach((t) => t.dispose());
  }
  results[1].forEach((r, i) => assert.deepEqual(r, results[0][i], `tensor ${i}`));
});

Deno.test("a Linear weight's gradient is contiguous (dW written in W's layout) and exact", async () => {
  const rng = new mg.Rng(3);
  const vals = (n: number) => Array.from({ length: n }, () => rng.next() * 2 - 1);
  const [N, I, O] = [6, 5, 3];
  const xs = vals(N * I), ws = vals(O * I), gs = vals(N * O);
  const x = mg.tensor(xs, { shape: [N, I] });
  const w = mg.tensor(ws, { shape: [O, I] }).keep().requiresGrad_();
  const y = mg.matmul(x, w.transpose());
  y.backward(mg.tensor(gs, { shape: [N, O] }));
  assert.ok(w.grad!.isContiguous, "the weight gradient is contiguous");
  const want = new Float64Array(O * I);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < I; i++) {
      for (let n = 0; n < N; n++) {
        want[o * I + i] += Math.fround(gs[n * O + o]) * Math.fround(xs[n * I + i]);
      }
    }
  }
  assertClose(await w.grad!.data(), want, { rtol: 1e-5, atol: 1e-6 }, "dW");
  for (const t of [x, w, y]) t.dispose();
});
