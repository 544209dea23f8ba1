/**
 * Multi-head Latent Attention vs the float64 reference of tests/reference/mla.ts: forward,
 * per-head max logits, gradients of x and every weight, the latent-cache decode (token by
 * token and after a prefill), absorbed vs expanded decode, HF parameter names, memory.
 *
 * Tolerances (f32): the output chains 4-5 matmuls of <= 24 terms, two RMSNorms, RoPE and a
 * softmax over <= 9 keys, with O(1) values: |gpu − ref| <= 5e-5·(1 + |ref|) elementwise (the
 * ~1e-4 matmul budget halved). Gradients pass through the same chain twice and reach ~10 in
 * magnitude, so their floor scales with the tensor: |gpu − ref| <= 5e-5·max(1, max|ref|) +
 * 5e-5·|ref| (1: the O(1) upstream gradient, which also bounds the rounding residue of a
 * gradient that is exactly 0, e.g. dq when T = 1). Decode vs full forward (absorption only
 * reorders the contractions): 5e-5·(1 + |ref|). Measured on llvmpipe over 40 cases per
 * property: every error below 1.3 % of its tolerance (~6e-7), leaving a wide margin for GPUs
 * with less exact exp / fma. Reference checks in float64: analytic vjp vs central differences
 * (h = 1e-6) to 1e-6 relative; absorbed vs expanded formulation to 1e-10.
 */
import * as mg from "../mod.ts";
import { setCoLaunch } from "../core/runtime.ts";
import assert from "node:assert/strict";
import { makeConfig } from "../nn/config.ts";
import { LatentCache, MultiHeadLatentAttention } from "../nn/mla.ts";
import { assertClose, check, countDispatches, fc, gpu, perKernel, seededValues } from "./util.ts";
import { dot, nd, type NDArray, numericGrad } from "./reference/ndarray.ts";
import {
  mlaAbsorbedRef,
  type MlaDims,
  mlaParamNames,
  mlaParamShapes,
  mlaRef,
  mlaVjp,
  type MlaWeights,
} from "./reference/mla.ts";
import { type RopeRef, ropeTablesRef } from "./reference/nn.ts";

const OUT_TOL = { rtol: 5e-5, atol: 5e-5 };
/** Gradients: |gpu − ref| <= GRAD_SCALE·max|ref| + GRAD_RTOL·|ref| per tensor. */
const GRAD_SCALE = 5e-5;
const GRAD_RTOL = 5e-5;
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

interface Case {
  z: MlaDims;
  D: number;
  B: number;
  T: number;
  offset: number;
  seed: number;
}

const arbCase: fc.Arbitrary<Case> = fc.record({
  H: fc.integer({ min: 2, max: 3 }),
  rq: fc.constantFrom<number | null>(null, 8),
  rkv: fc.constantFrom(6, 8),
  dn: fc.integer({ min: 4, max: 8 }),
  dr: fc.constantFrom(2, 4),
  dv: fc.integer({ min: 4, max: 8 }),
  D: fc.integer({ min: 16, max: 24 }),
  B: fc.integer({ min: 1, max: 2 }),
  T: fc.integer({ min: 1, max: 7 }),
  offset: fc.integer({ min: 0, max: 5 }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  bias: fc.boolean(),
}).map(({ H, rq, rkv, dn, dr, dv, D, B, T, offset, seed, bias }) => ({
  z: { H, rq, rkv, dn, dr, dv, theta: 10000, bias },
  D,
  B,
  T,
  offset,
  seed,
}));

function configOf(z: MlaDims, D: number) {
  const rope = z.rope ?? { rope_type: "default", rope_theta: z.theta };
  return makeConfig({
    max_position_embeddings: rope.rope_type === "yarn"
      ? rope.factor * rope.original_max_position_embeddings
      : 1024,
    rope_interleave: z.interleave ?? true,
    hidden_size: D,
    num_attention_heads: z.H,
    num_key_value_heads: z.H,
    q_lora_rank: z.rq,
    kv_lora_rank: z.rkv,
    qk_nope_head_dim: z.dn,
    qk_rope_head_dim: z.dr,
    v_head_dim: z.dv,
    rope_parameters: rope,
    attention_bias: z.bias ?? false,
  });
}

/**
 * Seeded weights with O(1) activations: Linear weights uniform ±2/√fan_in (logits of a few
 * units, so the softmax is far from uniform), norm gains in [0.5, 1.5].
 */
function randomWeights(z: MlaDims, D: number, seed: number): MlaWeights {
  const w: MlaWeights = {};
  let k = 0;
  for (const [name, shape] of Object.entries(mlaParamShapes(z, D))) {
    const n = numel(shape);
    const isNorm = name.includes("layernorm");
    const a = name.endsWith(".bias") ? 0.5 : 2 / Math.sqrt(shape[shape.length - 1]);
    const v = isNorm
      ? seededValues(n, seed + 97 * ++k, 0.5, 1.5)
      : seededValues(n, seed + 97 * ++k, -a, a);
    w[name] = nd(v, shape);
  }
  return w;
}

/** A layer of these dims holding the weights `w`. */
function layerWith(z: MlaDims, D: number, w: MlaWeights): MultiHeadLatentAttention {
  const mla = new MultiHeadLatentAttention(configOf(z, D), { seed: 7 });
  const sd = new Map<string, mg.Tensor>();
  for (const [name, a] of Object.entries(w)) {
    sd.set(name, mg.tensor(Float32Array.from(a.data), { shape: [...a.shape] }));
  }
  mla.loadStateDict(sd);
  for (const t of sd.values()) t.dispose();
  return mla;
}

function input(shape: number[], seed: number) {
  const v = seededValues(numel(shape), seed, -1, 1);
  return { r: nd(v, shape), values: v };
}

/**
 * |a − e| <= rel·max(1, max|e|) + rtol·|e|: the scale of the tensor sets the floor, and never
 * below the O(1) scale of the upstream gradient (a gradient that is exactly 0 in float64, e.g.
 * dq with T = 1, comes out as a rounding residue of O(1)·ε).
 */
function assertScaled(a: ArrayLike<number>, e: NDArray, rel: number, rtol: number, what: string) {
  let m = 0;
  for (const v of e.data) m = Math.max(m, Math.abs(v));
  assertClose(a, e, { rtol, atol: rel * Math.max(m, 1) }, what);
}

function assertThrowsMg(fn: () => unknown, includes: string): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected MoongradError, got ${e}`);
    if (!e.message.includes(includes)) {
      throw new Error(`error "${e.message}" does not include "${includes}"`);
    }
    return;
  }
  throw new Error(`expected a MoongradError including "${includes}", nothing was thrown`);
}

// ---- float64 reference self-checks -----------------------------------------------------------

Deno.test("reference: MLA vjp matches numericGrad; absorbed equals expanded (float64)", () => {
  for (const [rq, bias] of [[8, false], [null, false], [8, true], [null, true]] as const) {
    const z: MlaDims = { H: 2, rq, rkv: 6, dn: 4, dr: 4, dv: 3, theta: 10000, bias };
    const D = 10, shape = [2, 4, D], offset = 3;
    const w = randomWeights(z, D, 11);
    const x = input(shape, 5).r;
    const g = input(shape, 6).r;
    const { dx, grads } = mlaVjp(x, w, z, g, offset);
    const tol = { rtol: 1e-6, atol: 1e-8 };
    const f = (xx: NDArray, ww: MlaWeights) => dot(mlaRef(xx, ww, z, offset).out, g);
    assertClose(dx.data, numericGrad((v) => f(v, w), x), tol, `rq=${rq} dx`);
    for (const name of mlaParamNames(z)) {
      const num = numericGrad((v) => f(x, { ...w, [name]: v }), w[name]);
      assertClose(grads[name].data, num, tol, `rq=${rq} d${name}`);
    }
    const full = mlaRef(x, w, z, offset).out;
    assertClose(
      mlaAbsorbedRef(x, w, z, offset).data,
      full,
      { rtol: 1e-10, atol: 1e-12 },
      "absorbed",
    );
  }
});

// ---- training forward -----------------------------------------------------------------------

Deno.test("MLA forward and its recorded max logits match the float64 reference (q_lora_rank 8 or null; 5e-5)", async () => {
  await gpu();
  await check(arbCase, async ({ z, D, B, T, offset, seed }) => {
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const { r, values } = input([B, T, D], seed + 1);
    const x = mg.tensor(values, { shape: [B, T, D] });
    const ref = mlaRef(r, w, z, offset);
    const stats = new mg.nn.StepStats();
    const y = mla.forward(x, offset, { stats });
    assertClose(await y.data(), ref.out, OUT_TOL, "out");
    const m1 = stats.maxLogits(mla)!;
    if (m1.shape.length !== 1 || m1.shape[0] !== z.H) throw new Error(`maxLogits ${m1.shape}`);
    const v1 = await m1.data();
    assertClose(v1, ref.maxLogits, OUT_TOL, "maxLogits");
    // A second forward of the same step keeps the running max (same input: same values), an
    // eval-mode forward and a forward without stats record nothing.
    const y2 = mla.forward(x, offset, { stats });
    assert.deepEqual(await stats.maxLogits(mla)!.data(), v1, "running max of equal maxima");
    assert.equal(stats.forwards(mla), 2);
    mla.forward(x, offset).dispose();
    mla.eval();
    mla.forward(x, offset, { stats }).dispose();
    mla.train();
    assert.equal(stats.forwards(mla), 2, "eval / stat-less forwards recorded nothing");
    stats.dispose();
    y.dispose();
    y2.dispose();
    x.dispose();
    mla.dispose();
  }, 10);
});

Deno.test("MLA gradients of x and every weight match the reference vjp (5e-5 of scale)", async () => {
  await gpu();
  await check(arbCase, async ({ z, D, B, T, offset, seed }) => {
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const { r, values } = input([B, T, D], seed + 1);
    const gy = input([B, T, D], seed + 2);
    const x = mg.tensor(values, { shape: [B, T, D], requiresGrad: true });
    const gt = mg.tensor(gy.values, { shape: [B, T, D] });
    const y = mla.forward(x, offset);
    const prod = y.mul(gt);
    const loss = prod.sum();
    loss.backward();
    const ref = mlaVjp(r, w, z, gy.r, offset);
    assertScaled(await x.grad!.data(), ref.dx, GRAD_SCALE, GRAD_RTOL, "dx");
    let seen = 0;
    for (const [name, p] of mla.namedParameters()) {
      assertScaled(await p.grad!.data(), ref.grads[name], GRAD_SCALE, GRAD_RTOL, `d${name}`);
      seen++;
    }
    if (seen !== mlaParamNames(z).length) throw new Error(`${seen} parameters compared`);
    for (const t of [y, prod, loss, x, gt]) t.dispose();
    x.zeroGrad();
    mla.dispose();
  }, 6);
});

// ---- decode with the latent cache -----------------------------------------------------------

Deno.test("MLA decode with the latent cache equals the full forward (token by token, prefill + tokens, absorbed = expanded; 5e-5)", async () => {
  await gpu();
  await check(arbCase, async ({ z, D, B, T: t0, seed }) => {
    const T = t0 + 2;
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const { r, values } = input([B, T, D], seed + 1);
    const ref = mlaRef(r, w, z, 0);
    const x = mg.tensor(values, { shape: [B, T, D] });
    const yFull = mla.forward(x);
    const full = await yFull.data();
    yFull.dispose();
    assertClose(full, ref.out, OUT_TOL, "full forward");
    const prefill = Math.min(T - 1, 1 + (seed % 3));
    // Runs the cached path in chunks [0, prefill), then one token at a time.
    const decode = async (absorb: boolean, chunks: number[]) => {
      const cache = absorb ? mla.newCache(B) : LatentCache.forConfig(configOf(z, D), B);
      const out = new Float32Array(B * T * D);
      let start = 0;
      for (const len of chunks) {
        const xs = x.slice(1, start, start + len);
        const y = mla.forwardCached(xs, cache, { absorb });
        if (y.requiresGrad || y.gradFn) throw new Error("decode output recorded a graph");
        const d = await y.data();
        for (let b = 0; b < B; b++) {
          out.set(d.subarray(b * len * D, (b + 1) * len * D), (b * T + start) * D);
        }
        xs.dispose();
        y.dispose();
        start += len;
        if (cache.length !== start) throw new Error(`cache length ${cache.length} != ${start}`);
      }
      // The cache holds exactly c (after the norm) and the rotated k_rope per token.
      const c = cache.c(), kr = cache.kRope(), lat = cache.latents();
      if (lat.shape.join() !== [B, T, z.rkv + z.dr].join()) throw new Error(`${lat.shape}`);
      if (cache.floatsPerToken !== z.rkv + z.dr) throw new Error("floats per token");
      assertClose(await c.data(), ref.c, OUT_TOL, "cached c");
      assertClose(await kr.data(), ref.kRope, OUT_TOL, "cached k_rope");
      c.dispose();
      kr.dispose();
      lat.dispose();
      cache.dispose();
      return out;
    };
    const ones = Array.from({ length: T }, () => 1);
    const chunked = [prefill, ...Array.from({ length: T - prefill }, () => 1)];
    const absorbed1 = await decode(true, ones);
    const absorbed2 = await decode(true, chunked);
    const expanded = await decode(false, chunked);
    assertClose(absorbed1, ref.out, OUT_TOL, "absorbed token by token vs reference");
    assertClose(absorbed1, full, OUT_TOL, "absorbed token by token vs full forward");
    assertClose(absorbed2, ref.out, OUT_TOL, "absorbed prefill + tokens vs reference");
    assertClose(expanded, ref.out, OUT_TOL, "expanded vs reference");
    assertClose(absorbed2, expanded, OUT_TOL, "absorbed vs expanded");
    x.dispose();
    mla.dispose();
  }, 6);
});

Deno.test("attention_bias (HF placement): forward = float64, absorbed decode = full forward, bias grads (5e-5)", async () => {
  await gpu();
  for (const rq of [8, null]) {
    const z: MlaDims = { H: 2, rq, rkv: 6, dn: 4, dr: 4, dv: 4, theta: 10000, bias: true };
    const D = 16, B = 2, T = 5, seed = 41;
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const { r, values } = input([B, T, D], seed + 1);
    const x = mg.tensor(values, { shape: [B, T, D], requiresGrad: true });
    const ref = mlaRef(r, w, z, 0);
    const y = mla.forward(x);
    assertClose(await y.data(), ref.out, OUT_TOL, `rq=${rq} biased forward`);
    // The biases matter: the same weights without them give a different output.
    const { "o_proj.bias": _o, "kv_a_proj_with_mqa.bias": _k, "q_a_proj.bias": _q, ...bare } = w;
    const plain = mlaRef(r, bare, { ...z, bias: false }, 0).out;
    if (plain.data.every((v, i) => Math.abs(v - ref.out.data[i]) < 1e-3)) {
      throw new Error("biases had no effect on the reference");
    }
    const gy = input([B, T, D], seed + 2);
    const gt = mg.tensor(gy.values, { shape: [B, T, D] });
    const loss = y.mul(gt).sum();
    loss.backward();
    const vjp = mlaVjp(r, w, z, gy.r, 0);
    for (const [name, p] of mla.namedParameters()) {
      if (!name.endsWith(".bias")) continue;
      assertScaled(await p.grad!.data(), vjp.grads[name], GRAD_SCALE, GRAD_RTOL, `d${name}`);
    }
    const cache = mla.newCache(B);
    const out = new Float32Array(B * T * D);
    for (let t = 0; t < T; t++) {
      const xs = x.slice(1, t, t + 1);
      const yt = mla.forwardCached(xs, cache);
      const d = await yt.data();
      for (let b = 0; b < B; b++) out.set(d.subarray(b * D, (b + 1) * D), (b * T + t) * D);
      xs.dispose();
      yt.dispose();
    }
    assertClose(out, ref.out, OUT_TOL, `rq=${rq} biased absorbed decode vs float64`);
    const cached = cache.c();
    assertClose(await cached.data(), ref.c, OUT_TOL, "cached latent includes the kv_a bias");
    cached.dispose();
    cache.dispose();
    for (const t of [x, y, gt, loss]) t.dispose();
    mla.dispose();
  }
});

Deno.test("LatentCache stores r_kv + d_r floats per token, grows by doubling, keeps its rows", async () => {
  await gpu();
  const cache = new LatentCache(2, 8, 4);
  const emptyInfo = [cache.length, cache.capacity, cache.bytes];
  if (emptyInfo.some((v) => v !== 0)) throw new Error(`empty cache: ${emptyInfo}`);
  const rows: number[][] = [];
  for (let step = 0; step < 5; step++) {
    const T = step === 0 ? 3 : 1;
    const cv = seededValues(2 * T * 8, 100 + step);
    const kv = seededValues(2 * T * 4, 200 + step);
    const c = mg.tensor(cv, { shape: [2, T, 8] });
    const k = mg.tensor(kv, { shape: [2, T, 4] });
    cache.append(c, k);
    c.dispose();
    k.dispose();
    rows.push([...cv], [...kv]);
  }
  if (cache.length !== 7) throw new Error(`length ${cache.length}`);
  if (cache.floatsPerToken !== 12) throw new Error(`floatsPerToken ${cache.floatsPerToken}`);
  if (cache.capacity < 7 || cache.bytes !== 4 * 2 * cache.capacity * 12) throw new Error("bytes");
  // Rebuild the expected [B, S, 12] rows from the appended chunks.
  const expected = new Float32Array(2 * 7 * 12);
  let s = 0;
  for (let step = 0; step < 5; step++) {
    const T = step === 0 ? 3 : 1;
    const [cv, kv] = [rows[2 * step], rows[2 * step + 1]];
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < 8; j++) expected[(b * 7 + s + t) * 12 + j] = cv[(b * T + t) * 8 + j];
        for (let j = 0; j < 4; j++) {
          expected[(b * 7 + s + t) * 12 + 8 + j] = kv[(b * T + t) * 4 + j];
        }
      }
    }
    s += T;
  }
  const lat = cache.latents();
  assertClose(await lat.data(), expected, { rtol: 0, atol: 0 }, "latents");
  lat.dispose();
  const exact = new LatentCache(1, 8, 4, { capacity: 5 });
  if (exact.bytes !== 4 * 5 * 12) throw new Error(`preallocated bytes ${exact.bytes}`);
  exact.dispose();
  assertThrowsMg(() => {
    const bad = mg.zeros([3, 1, 8]);
    const k = mg.zeros([3, 1, 4]);
    try {
      cache.append(bad, k);
    } finally {
      bad.dispose();
      k.dispose();
    }
  }, "LatentCache.append");
  cache.dispose();
});

// ---- names, memory, errors ------------------------------------------------------------------

Deno.test("MLA parameter names and shapes follow HF DeepseekV3Attention (attention_bias on q_a, kv_a, o only)", async () => {
  await gpu();
  // HF DeepseekV3Attention: bias=config.attention_bias on q_a_proj, kv_a_proj_with_mqa and
  // o_proj; q_proj, q_b_proj and kv_b_proj are always bias-free.
  const hfNames = {
    "8,true": [
      "q_a_proj.weight",
      "q_a_proj.bias",
      "q_a_layernorm.weight",
      "q_b_proj.weight",
      "kv_a_proj_with_mqa.weight",
      "kv_a_proj_with_mqa.bias",
      "kv_a_layernorm.weight",
      "kv_b_proj.weight",
      "o_proj.weight",
      "o_proj.bias",
    ],
    "null,true": [
      "q_proj.weight",
      "kv_a_proj_with_mqa.weight",
      "kv_a_proj_with_mqa.bias",
      "kv_a_layernorm.weight",
      "kv_b_proj.weight",
      "o_proj.weight",
      "o_proj.bias",
    ],
  } as Record<string, string[]>;
  for (const [rq, bias] of [[8, false], [null, false], [8, true], [null, true]] as const) {
    const z: MlaDims = { H: 3, rq, rkv: 8, dn: 6, dr: 4, dv: 5, theta: 10000, bias };
    const cfg = configOf(z, 20);
    const mla = new MultiHeadLatentAttention({ ...cfg, rms_norm_eps: 1e-3 }, { seed: 1 });
    const names = [...mla.namedParameters()].map(([n]) => n);
    const want = mlaParamNames(z);
    if (names.join() !== want.join()) throw new Error(`names ${names} != ${want}`);
    const hf = hfNames[`${rq},${bias}`];
    if (hf && names.join() !== hf.join()) throw new Error(`names ${names} != HF ${hf}`);
    const shapes = mlaParamShapes(z, 20);
    for (const [n, p] of mla.namedParameters()) {
      if (p.shape.join() !== shapes[n].join()) throw new Error(`${n}: ${p.shape}`);
    }
    if (mla.kvALayernorm.eps !== 1e-6 || (rq !== null && mla.qALayernorm!.eps !== 1e-6)) {
      throw new Error("inner norms must use eps 1e-6 whatever rms_norm_eps is");
    }
    if ([...mla.namedBuffers()].length !== 0) throw new Error("unexpected buffers");
    // Seeded init is deterministic and std = initializer_range.
    const again = new MultiHeadLatentAttention(cfg, { seed: 1 });
    const a = await mla.oProj.weight.data();
    const b = await again.oProj.weight.data();
    assertClose(a, b, { rtol: 0, atol: 0 }, "seeded init");
    const std = Math.sqrt(Array.from(a).reduce((s, v) => s + v * v, 0) / a.length);
    if (!(std > 0.012 && std < 0.028)) throw new Error(`o_proj std ${std}`);
    mla.dispose();
    again.dispose();
  }
});

Deno.test("MLA memory stays flat over forward+backward and over decode steps", async () => {
  await gpu();
  const z: MlaDims = { H: 2, rq: 8, rkv: 8, dn: 4, dr: 2, dv: 4, theta: 10000 };
  const D = 16;
  const mla = layerWith(z, D, randomWeights(z, D, 3));
  const x = mg.tensor(seededValues(2 * 5 * D, 9), { shape: [2, 5, D], requiresGrad: true });
  const step = () => {
    const y = mla.forward(x);
    const sq = y.square();
    const l = sq.sum();
    l.backward();
    for (const t of [y, sq, l]) t.dispose();
    mla.zeroGrad();
    x.zeroGrad();
  };
  step();
  await mg.sync();
  const before = mg.memory().inUseBytes;
  for (let i = 0; i < 3; i++) step();
  await mg.sync();
  const after = mg.memory().inUseBytes;
  if (after !== before) throw new Error(`fwd+bwd: inUseBytes ${before} -> ${after}`);
  // Decode: a preallocated cache, one token per step.
  const cache = LatentCache.forConfig(configOf(z, D), 2, { capacity: 8 });
  const tok = (i: number) => x.slice(1, i % 5, i % 5 + 1);
  const decodeStep = (i: number) => {
    const xs = tok(i);
    mla.forwardCached(xs, cache).dispose();
    xs.dispose();
  };
  decodeStep(0);
  await mg.sync();
  const d0 = mg.memory().inUseBytes;
  for (let i = 1; i < 8; i++) decodeStep(i);
  await mg.sync();
  const d1 = mg.memory().inUseBytes;
  if (d1 !== d0) throw new Error(`decode: inUseBytes ${d0} -> ${d1}`);
  cache.dispose();
  x.dispose();
  mla.dispose();
});

Deno.test("MLA backward: the q / k / v assembly costs one kernel each side (ropeTail, ropeInsertShared), no layout copies", async () => {
  await gpu();
  const config = makeConfig("tiny");
  const attn = new MultiHeadLatentAttention(config, { seed: 0 });
  const x = mg.randn([2, 8, config.hidden_size], { seed: 1, requiresGrad: true });
  const y = attn.forward(x, 3);
  const g = mg.randn(y.shape, { seed: 2 });
  const coLaunch = setCoLaunch(true); // as on a GPU (CPU adapters leave it off by default)
  const launches = countDispatches(() => y.backward(g));
  setCoLaunch(coLaunch);
  const c = perKernel(launches);
  const total = [...c.values()].reduce((a, b) => a + b, 0);
  const counts = JSON.stringify([...launches]);
  // Per layer: 10 matmuls (5 projections × dX, dW) in 5 paired launches, 3 attention kernels,
  // 2 RMSNorm kernels, rope_cat (q) + rope_insert_grad (k, v), the k / v and c slices'
  // gradients (slice_grad ×3), the accumulations folded into the kernels' epilogues: 17
  // kernels (33 before: rope ×2 plus slice_grad ×7, add ×4, copy ×2 and a head sum around
  // them; 25 before the epilogues), in 12 launches (independent pairs co-launched).
  assert.equal(c.get("rope_cat_offset"), 1, counts);
  assert.equal(c.get("rope_insert_grad_offset"), 1, counts);
  for (const k of ["copy", "sum_thread", "sum_rows", "rope_offset", "alias_copy"]) {
    assert.equal(c.get(k), undefined, `${k}: ${counts}`);
  }
  assert.ok((c.get("slice_grad") ?? 0) <= 3 && (c.get("add") ?? 0) <= 3, counts);
  assert.ok(total <= 17, `${total} kernels: ${counts}`);
  const n = [...launches.values()].reduce((a, b) => a + b, 0);
  assert.ok(n <= 12, `${n} launches: ${counts}`);
  for (const t of [x, y, g]) t.dispose();
  attn.dispose();
});

Deno.test("MLA rejects bad inputs with a MoongradError naming the op", async () => {
  await gpu();
  const z: MlaDims = { H: 2, rq: null, rkv: 8, dn: 4, dr: 2, dv: 4, theta: 10000 };
  const mla = new MultiHeadLatentAttention(configOf(z, 16));
  const bad = mg.zeros([2, 3, 15]);
  const x = mg.zeros([2, 3, 16]);
  assertThrowsMg(() => mla.forward(bad), "MultiHeadLatentAttention.forward");
  assertThrowsMg(() => mla.forward(x, -1), "positionOffset");
  assertThrowsMg(() => mla.forward(x, 1.5), "positionOffset");
  const wrongBatch = new LatentCache(3, 8, 2);
  assertThrowsMg(() => mla.forwardCached(x, wrongBatch), "MultiHeadLatentAttention.forwardCached");
  const wrongRank = new LatentCache(2, 6, 2);
  assertThrowsMg(() => mla.forwardCached(x, wrongRank), "kv_lora_rank");
  assertThrowsMg(() => new LatentCache(0, 8, 2), "LatentCache");
  assertThrowsMg(
    () => new MultiHeadLatentAttention({ ...configOf(z, 16), qk_rope_head_dim: 3 }),
    "qk_rope_head_dim",
  );
  for (const t of [bad, x]) t.dispose();
  wrongBatch.dispose();
  wrongRank.dispose();
  mla.dispose();
});

// ---- YaRN and the half-split rotary layout ----------------------------------------------------

/**
 * Rotary variants with a small original context, so that positions beyond it are cheap: each
 * with the offsets its forward runs at (past original_max_position_embeddings).
 */
const YARN_VARIANTS: { name: string; dr: number; rope: RopeRef; offsets: [number, number] }[] = [
  {
    name: "plain θ 10000",
    dr: 4,
    rope: { rope_type: "default", rope_theta: 10000 },
    offsets: [0, 60],
  },
  {
    // The micro config: original 16, factor 4, max 64; K2-style mscales (cos/sin
    // factor 1, softmax scale × m(4, 1)²).
    name: "micro (L 16, ×4)",
    dr: 8,
    rope: {
      rope_type: "yarn",
      rope_theta: 10000,
      factor: 4,
      original_max_position_embeddings: 16,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 1,
      attention_factor: null,
      truncate: true,
    },
    offsets: [36, 44],
  },
  {
    // A fractional ramp (truncate false: pairs 1 and 2 blend) and a cos/sin factor m(4, 1).
    name: "ramp (L 64, truncate false, mscale only)",
    dr: 16,
    rope: {
      rope_type: "yarn",
      rope_theta: 10000,
      factor: 4,
      original_max_position_embeddings: 64,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 0.707,
      mscale_all_dim: null,
      attention_factor: null,
      truncate: false,
    },
    offsets: [100, 200],
  },
  {
    // Both factors away from 1: cos/sin m(8, 1)/m(8, 0.5), softmax × m(8, 0.5)².
    name: "mixed mscales (L 8, ×8)",
    dr: 4,
    rope: {
      rope_type: "yarn",
      rope_theta: 500,
      factor: 8,
      original_max_position_embeddings: 8,
      beta_fast: 8,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 0.5,
      attention_factor: null,
      truncate: true,
    },
    offsets: [30, 50],
  },
];

const arbYarnCase: fc.Arbitrary<Case & { variant: string }> = fc.record({
  v: fc.integer({ min: 0, max: YARN_VARIANTS.length - 1 }),
  interleave: fc.boolean(),
  H: fc.integer({ min: 2, max: 3 }),
  rq: fc.constantFrom<number | null>(null, 8),
  dn: fc.integer({ min: 4, max: 6 }),
  dv: fc.integer({ min: 4, max: 6 }),
  D: fc.integer({ min: 16, max: 20 }),
  B: fc.integer({ min: 1, max: 2 }),
  T: fc.integer({ min: 1, max: 5 }),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
  bias: fc.boolean(),
}).map(({ v, interleave, H, rq, dn, dv, D, B, T, at, seed, bias }) => {
  const { name, dr, rope, offsets: [lo, hi] } = YARN_VARIANTS[v];
  return {
    z: { H, rq, rkv: 8, dn, dr, dv, theta: rope.rope_theta, bias, rope, interleave },
    D,
    B,
    T,
    offset: lo + Math.floor(at * (hi - lo)),
    seed,
    variant: `${name}, interleave ${interleave}`,
  };
});

Deno.test("reference (YaRN, half-split): MLA vjp matches numericGrad; absorbed equals expanded (float64)", () => {
  for (const { rope, dr, offsets } of YARN_VARIANTS.slice(1)) {
    for (const interleave of [true, false]) {
      const z: MlaDims = { H: 2, rq: 8, rkv: 6, dn: 4, dr, dv: 3, theta: 0, rope, interleave };
      const D = 10, shape = [1, 3, D], offset = offsets[0];
      const w = randomWeights(z, D, 12);
      const x = input(shape, 5).r;
      const g = input(shape, 6).r;
      const { dx, grads } = mlaVjp(x, w, z, g, offset);
      const tol = { rtol: 1e-6, atol: 1e-8 };
      const f = (xx: NDArray, ww: MlaWeights) => dot(mlaRef(xx, ww, z, offset).out, g);
      assertClose(dx.data, numericGrad((v) => f(v, w), x), tol, "dx");
      for (const name of ["q_b_proj.weight", "kv_a_proj_with_mqa.weight"]) {
        const num = numericGrad((v) => f(x, { ...w, [name]: v }), w[name]);
        assertClose(grads[name].data, num, tol, `d${name}`);
      }
      assertClose(
        mlaAbsorbedRef(x, w, z, offset).data,
        mlaRef(x, w, z, offset).out,
        { rtol: 1e-10, atol: 1e-12 },
        "absorbed",
      );
    }
  }
});

Deno.test("MLA with YaRN / half-split RoPE past original_max_position_embeddings: forward, max logits and gradients match float64 (5e-5)", async () => {
  await gpu();
  await check(arbYarnCase, async ({ z, D, B, T, offset, seed, variant }) => {
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const tables = ropeTablesRef(z.dr, z.rope!);
    if (Math.abs(mla.softmaxScale * Math.sqrt(z.dn + z.dr) / tables.softmax - 1) > 1e-15) {
      throw new Error(`${variant}: softmax scale ${mla.softmaxScale}`);
    }
    const { r, values } = input([B, T, D], seed + 1);
    const gy = input([B, T, D], seed + 2);
    const x = mg.tensor(values, { shape: [B, T, D], requiresGrad: true });
    const gt = mg.tensor(gy.values, { shape: [B, T, D] });
    const ref = mlaRef(r, w, z, offset);
    const stats = new mg.nn.StepStats();
    const y = mla.forward(x, offset, { stats });
    assertClose(await y.data(), ref.out, OUT_TOL, `${variant}: out`);
    assertClose(
      await stats.maxLogits(mla)!.data(),
      ref.maxLogits,
      OUT_TOL,
      `${variant}: maxLogits`,
    );
    stats.dispose();
    const loss = y.mul(gt).sum();
    loss.backward();
    const vjp = mlaVjp(r, w, z, gy.r, offset);
    assertScaled(await x.grad!.data(), vjp.dx, GRAD_SCALE, GRAD_RTOL, `${variant}: dx`);
    for (const [name, p] of mla.namedParameters()) {
      assertScaled(await p.grad!.data(), vjp.grads[name], GRAD_SCALE, GRAD_RTOL, `d${name}`);
    }
    for (const t of [y, loss, x, gt]) t.dispose();
    mla.dispose();
  }, 10);
});

Deno.test("MLA decode with YaRN / half-split RoPE: prefill past the original context, then token by token, equals the full forward and float64 (absorbed and expanded; 5e-5)", async () => {
  await gpu();
  await check(arbYarnCase, async ({ z, D, B, T, offset, seed, variant }) => {
    const P = offset; // prefill length: the decoded tokens sit at positions P..P+T−1
    const S = P + T;
    const w = randomWeights(z, D, seed);
    const mla = layerWith(z, D, w);
    const { r, values } = input([B, S, D], seed + 1);
    const x = mg.tensor(values, { shape: [B, S, D] });
    const ref = mlaRef(r, w, z, 0);
    const yFull = mla.forward(x);
    const full = await yFull.data();
    yFull.dispose();
    assertClose(full, ref.out, OUT_TOL, `${variant}: full forward`);
    for (const absorb of [true, false]) {
      const cache = mla.newCache(B);
      const out = new Float32Array(B * S * D);
      const chunks = [[0, P], ...Array.from({ length: T }, (_, i) => [P + i, P + i + 1])];
      for (const [a, b] of chunks) {
        if (a === b) continue;
        const xs = x.slice(1, a, b);
        const y = mla.forwardCached(xs, cache, { absorb });
        const d = await y.data();
        const len = b - a;
        for (let bb = 0; bb < B; bb++) {
          out.set(d.subarray(bb * len * D, (bb + 1) * len * D), (bb * S + a) * D);
        }
        xs.dispose();
        y.dispose();
      }
      const kr = cache.kRope();
      assertClose(await kr.data(), ref.kRope, OUT_TOL, `${variant}: cached k_rope`);
      kr.dispose();
      cache.dispose();
      assertClose(out, ref.out, OUT_TOL, `${variant}: decode (absorb ${absorb}) vs float64`);
      assertClose(out, full, OUT_TOL, `${variant}: decode (absorb ${absorb}) vs full forward`);
    }
    x.dispose();
    mla.dispose();
  }, 6);
});
