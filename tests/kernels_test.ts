/**
 * The kernel catalogue: compiles and runs every kernel template the library can generate —
 * each op family in every dtype it takes (f16 only where the adapter has shader-f16), every
 * tile configuration of matmul and attention, forward and backward, the model's MLA/MoE/RoPE
 * kernels and every optimizer — on the implementation the suite runs on (wgpu/naga or
 * Dawn/Tint), and asserts the compiler reported no error and no warning. A static scan of the
 * library's `kernel({ name: ... })` call sites then asserts every literal kernel name was
 * compiled here, so a new kernel cannot slip past without being added to this catalogue.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { setMatmulTextures } from "../ops/matmul_texture.ts";
import {
  compiledKernelCount,
  compiledKernelNames,
  compiledKernelSources,
  kernelDiagnostics,
} from "../core/kernel.ts";
import { CPU_MATMUL_CONFIG, GPU_MATMUL_CONFIG, type MatmulConfig } from "../ops/matmul.ts";
import {
  type AttentionConfig,
  CPU_ATTENTION_CONFIG,
  DEFAULT_ATTENTION_CONFIG,
} from "../ops/attention.ts";
import { setRmsNormForwardLayout, setRmsNormRowLanes } from "../ops/rmsnorm.ts";
import { setRowLayout } from "../ops/softmax.ts";
import { gpu } from "./util.ts";

type FloatType = "f32" | "f16";

/** Sum of every differentiable tensor, in f32, to backpropagate through all of them at once. */
function total(ts: mg.Tensor[]): mg.Tensor {
  const parts = ts.filter((t) => t.requiresGrad).map((t) =>
    (t.dtype === "f32" ? t : t.cast("f32")).sum()
  );
  return parts.reduce((a, b) => a.add(b));
}

function values(n: number, scale = 1): number[] {
  return Array.from({ length: n }, (_, i) => scale * Math.sin(1.7 * i + 0.3));
}

/** Every unary, binary and comparison op, forward and backward, in one dtype. */
async function elementwise(dtype: FloatType | "i32"): Promise<void> {
  mg.scope(() => {
    const isInt = dtype === "i32";
    const data = isInt ? [3, -2, 5, 1, -4, 2] : values(6, 1.5).map((v) => v + 2.5);
    const x = mg.tensor(data, { shape: [2, 3], dtype, requiresGrad: !isInt });
    const y = mg.tensor(data.map((v) => (isInt ? v + 1 : v * 0.5 + 0.25)), {
      shape: [2, 3],
      dtype,
      requiresGrad: !isInt,
    });
    const unary = isInt ? [mg.neg, mg.abs, mg.relu, mg.square] : [
      mg.neg,
      mg.abs,
      mg.exp,
      mg.log,
      mg.sqrt,
      mg.rsqrt,
      mg.sin,
      mg.cos,
      mg.tanh,
      mg.sigmoid,
      mg.silu,
      mg.gelu,
      mg.relu,
      mg.square,
    ];
    const binary = isInt
      ? [mg.add, mg.sub, mg.mul, mg.maximum, mg.minimum]
      : [mg.add, mg.sub, mg.mul, mg.div, mg.pow, mg.maximum, mg.minimum];
    const outs = [...unary.map((f) => f(x)), ...binary.map((f) => f(x, y))];
    if (!isInt) outs.push(mg.gelu(x, "tanh"));
    const cmp = [mg.eq, mg.ne, mg.lt, mg.le, mg.gt, mg.ge].map((f) => f(x, y));
    outs.push(mg.where(cmp[2], x, y), mg.add(x, 2), mg.mul(3, x));
    for (const c of cmp) outs.push(mg.cast(c, dtype));
    outs.push(mg.cast(x, isInt ? "f32" : "i32"), mg.contiguous(x.transpose()));
    if (!isInt) total(outs).backward();
  });
  await mg.sync();
}

/** Reductions, softmax and losses over short rows (<= 16) and long rows (one workgroup each). */
async function rows(dtype: FloatType): Promise<void> {
  for (const n of [5, 16, 70, 300]) {
    mg.scope(() => {
      const x = mg.tensor(values(3 * n), { shape: [3, n], dtype, requiresGrad: true });
      const parts = [
        x.sum(1),
        x.mean(-1),
        x.max(1),
        x.min(1),
        mg.variance(x, 1),
        x.sum(0),
        mg.softmax(x),
        mg.logSoftmax(x),
        mg.softmax(x, 0),
      ];
      mg.argmax(x, 1);
      mg.argmin(x, 0);
      mg.topk(x, 2);
      const w = mg.tensor(values(n), { shape: [n], dtype, requiresGrad: true });
      parts.push(mg.nn.rmsNorm(x, w));
      const tall = mg.tensor(values(40 * n), { shape: [40, n], dtype, requiresGrad: true });
      parts.push(mg.nn.rmsNorm(tall, w));
      // Only the weight needs a gradient: dg is reduced over row chunks (dg_partial + dg_sum).
      const fixed = mg.tensor(values(40 * n), { shape: [40, n], dtype });
      parts.push(mg.nn.rmsNorm(fixed, w));
      const targets = mg.tensor([0, 1, n - 1], { dtype: "i32" });
      parts.push(mg.crossEntropy(x.cast("f32"), targets));
      parts.push(mg.mseLoss(x, mg.zerosLike(x)));
      total(parts).backward();
    });
  }
  await mg.sync();
}

/** Layout, concat, indexing and creation kernels. */
async function layoutAndIndexing(dtype: FloatType | "i32"): Promise<void> {
  const isInt = dtype === "i32";
  mg.scope(() => {
    const x = mg.tensor(values(24, 4).map(Math.round), {
      shape: [2, 3, 4],
      dtype,
      requiresGrad: !isInt,
    });
    const idx = mg.tensor([2, 0, 1], { dtype: "i32" });
    const outs = [
      x.permute([2, 0, 1]).contiguous(),
      x.slice(2, 1, 4, 2).contiguous(),
      mg.concat([x, x], 1),
      mg.stack([x, x], 0),
      ...mg.split(x, 2, 2).map((t) => t.contiguous()),
      mg.indexSelect(x, 1, idx),
      mg.gather(x, 2, mg.tensor(Array(24).fill(1), { shape: [2, 3, 4], dtype: "i32" })),
      mg.scatterAdd(x, 1, mg.tensor(Array(24).fill(0), { shape: [2, 3, 4], dtype: "i32" }), x),
      mg.indexAdd(x, 1, idx, x),
      // Outputs × index length over 2^26: the sorted path (small ones mark their rows instead),
      // with over 1024 target rows: the bucket sort's global-atomics histogram.
      mg.indexAdd(
        mg.zeros([1100, 4], { dtype: x.dtype }),
        0,
        mg.tensor(Array.from({ length: 20000 }, (_, i) => (i * 7) % 1100), { dtype: "i32" }),
        mg.ones([20000, 4], { dtype: x.dtype }),
      ),
      x.expand([2, 2, 3, 4]).contiguous(),
    ];
    if (!isInt) {
      const emb = mg.embedding(x.reshape([6, 4]), mg.tensor([[1, 5], [0, 2]], { dtype: "i32" }));
      outs.push(emb);
      total(outs).backward();
    }
  });
  mg.scope(() => {
    mg.zeros([5], { dtype });
    mg.ones([5], { dtype });
    mg.full([5], 2, { dtype });
    mg.arange(0, 10, 1, { dtype });
    if (!isInt) {
      mg.rand([7], { dtype, seed: 1 });
      mg.randn([7], { dtype, seed: 2 });
    }
  });
  await mg.sync();
}

/** Matmul (plain, batched, transposed operands) forward and backward under one tile config. */
async function matmuls(dtype: FloatType): Promise<void> {
  mg.scope(() => {
    for (const [m, k, n] of [[5, 7, 3], [16, 16, 16], [33, 20, 12]]) {
      const a = mg.tensor(values(2 * m * k), { shape: [2, m, k], dtype, requiresGrad: true });
      const b = mg.tensor(values(k * n), { shape: [k, n], dtype, requiresGrad: true });
      const c = mg.tensor(values(n * k), { shape: [n, k], dtype, requiresGrad: true });
      const r = mg.tensor(values(2 * m * n), { shape: [2, m, n], dtype, requiresGrad: true });
      // a feeds three products: the second and third dA fold the first in (C = D + A·B), and
      // addmm adds r in the forward epilogue.
      total([a.matmul(b), a.matmul(c.transpose()), mg.addmm(r, a, b)]).backward();
    }
  });
  await mg.sync();
  // The CPU adapters' texture path (f32 only), forced: packs and both product variants.
  if (dtype !== "f32") return;
  const previous = setMatmulTextures(true);
  try {
    mg.scope(() => {
      const a = mg.tensor(values(6 * 5), { shape: [6, 5], dtype, requiresGrad: true });
      const b = mg.tensor(values(5 * 7), { shape: [5, 7], dtype });
      total([a.matmul(b), a.matmul(b.add(b))]).backward();
    });
    await mg.sync();
  } finally {
    setMatmulTextures(previous);
  }
}

/** Fused causal attention forward and backward (with the max-logit output). */
async function attentions(dtype: FloatType): Promise<void> {
  mg.scope(() => {
    for (const [T, S, D] of [[5, 5, 8], [3, 9, 16], [17, 17, 72]]) {
      const q = mg.tensor(values(2 * T * D), { shape: [1, 2, T, D], dtype, requiresGrad: true });
      const k = mg.tensor(values(2 * S * D, 0.7), {
        shape: [1, 2, S, D],
        dtype,
        requiresGrad: true,
      });
      const v = mg.tensor(values(2 * S * D, 0.3), {
        shape: [1, 2, S, D],
        dtype,
        requiresGrad: true,
      });
      const { out, maxLogits } = mg.attention(q, k, v, { causal: true });
      total([out]).backward();
      maxLogits.dispose();
      // k and v as views of one buffer: the kernels read v through k's binding.
      const kv = mg.tensor(values(2 * S * 2 * D, 0.5), {
        shape: [1, 2, S, 2 * D],
        dtype,
        requiresGrad: true,
      });
      const shared = mg.attention(q, kv.slice(3, 0, D), kv.slice(3, D, 2 * D), { causal: true });
      total([shared.out]).backward();
      shared.maxLogits.dispose();
    }
  });
  await mg.sync();
}

/** A micro K2 model: MLA, group-limited MoE routing, RoPE, every optimizer, cached decode. */
async function model(): Promise<void> {
  const config = mg.nn.makeConfig({
    vocab_size: 32,
    hidden_size: 24,
    intermediate_size: 48,
    moe_intermediate_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 3,
    num_key_value_heads: 3,
    n_routed_experts: 4,
    n_group: 2,
    topk_group: 1,
    num_experts_per_tok: 2,
    kv_lora_rank: 8,
    q_lora_rank: 12,
    qk_nope_head_dim: 8,
    qk_rope_head_dim: 4,
    v_head_dim: 8,
    aux_loss_alpha: 0.01,
  });
  const ids = mg.tensor(Int32Array.from([1, 5, 9, 2, 30, 7, 7, 0]), { shape: [1, 8] });
  for (const kind of ["muonclip", "adamw", "sgd", "muon"] as const) {
    const m = new mg.nn.KimiLM(config, { seed: 3 });
    const opt = kind === "muonclip"
      ? new mg.optim.MuonClip(m, { lr: 0.02, tau: 1 })
      : kind === "adamw"
      ? new mg.optim.AdamW(m.parameters(), { lr: 1e-3, checkFinite: true })
      : kind === "sgd"
      ? new mg.optim.SGD(m.parameters(), { lr: 1e-3, momentum: 0.9 })
      : new mg.optim.MuonWithAdamW(m, { muon: { lr: 0.02 }, adamw: { lr: 1e-3 } });
    const stats = new mg.nn.StepStats();
    mg.scope(() => m.loss(ids, ids, { stats }).backward());
    await (opt instanceof mg.optim.MuonClip ? opt.step(stats) : opt.step());
    opt.zeroGrad();
    m.updateRouterBias(stats, 1e-3);
    stats.dispose();
    if (kind === "muonclip") {
      const prompt = ids.slice(1, 0, 3);
      await m.generate(prompt, { maxNewTokens: 2, seed: 1 });
      prompt.dispose();
    }
    opt.dispose?.();
    m.dispose();
  }
  ids.dispose();
  await mg.sync();
}

Deno.test("no kernel in the library reads parameters positionally (prm(i), prmf(i), prmi(i))", async () => {
  // Kernels declare their parameters (core/params.ts) and read them by name; the positional
  // readers are gone from the generated source, and core/kernel.ts refuses a body that calls one.
  const offenders: string[] = [];
  for (const dir of ["core", "ops", "nn", "optim", "io"]) {
    for await (const e of Deno.readDir(new URL(`../${dir}/`, import.meta.url))) {
      if (!e.name.endsWith(".ts")) continue;
      const path = `${dir}/${e.name}`;
      const src = await Deno.readTextFile(new URL(`../${path}`, import.meta.url));
      // core/kernel.ts holds the regex that refuses them, core/params.ts generates param_word.
      const lines = src.split("\n");
      lines.forEach((l, i) => {
        if (/\bprm[fi]?\(/.test(l) && path !== "core/kernel.ts") {
          offenders.push(`${path}:${i + 1}: ${l.trim()}`);
        }
        if (/\bparam_word\(/.test(l) && path !== "core/kernel.ts" && path !== "core/params.ts") {
          offenders.push(`${path}:${i + 1}: ${l.trim()}`);
        }
      });
    }
  }
  assert.deepEqual(offenders, [], "positional parameter reads in kernel sources");
});

/**
 * Literal kernel names at `kernel({ name: ... })` call sites (and wrappers such as attention's
 * `kvKernel(kvShared, { name: ... })`), as patterns.
 */
async function kernelNamesInSource(): Promise<RegExp[]> {
  const out: RegExp[] = [];
  for (const dir of ["core", "ops", "nn", "optim", "io"]) {
    for await (const e of Deno.readDir(new URL(`../${dir}/`, import.meta.url))) {
      if (!e.name.endsWith(".ts")) continue;
      const src = await Deno.readTextFile(new URL(`../${dir}/${e.name}`, import.meta.url));
      for (const m of src.matchAll(/[kK]ernel\((?:\w+,\s*)?\{\s*name:\s*("([^"]+)"|`([^`]+)`)/g)) {
        const literal = m[2] ?? m[3].replace(/[.*+?^()|[\]\\]/g, "\\$&")
          .replace(/\$\{[^}]*\}/g, ".+");
        out.push(new RegExp(`^${literal}$`));
      }
    }
  }
  return out;
}

Deno.test("every kernel template compiles with no compiler error or warning, and none is left out", async () => {
  const info = await gpu();
  const before = mg.memory().liveTensors;
  const floatTypes: FloatType[] = info.f16 ? ["f32", "f16"] : ["f32"];
  if (!info.f16) console.log("adapter has no shader-f16: f16 variants not compiled here");
  for (const t of [...floatTypes, "i32" as const]) {
    await elementwise(t);
    await layoutAndIndexing(t);
  }
  for (const t of floatTypes) await rows(t);
  // RMSNorm's backward rows with every lane count an adapter takes (one thread per row or 8
  // lanes on CPU adapters, 128 on GPUs).
  for (const count of [1, 8, 128]) {
    const lanes = setRmsNormRowLanes(count);
    try {
      for (const t of floatTypes) await rows(t);
    } finally {
      setRmsNormRowLanes(lanes);
    }
  }
  // RMSNorm's forward in both layouts (one thread per row is CPU adapters' default from 64 rows).
  for (const layout of ["lanes", "thread"] as const) {
    const previous = setRmsNormForwardLayout(layout);
    try {
      for (const t of floatTypes) await rows(t);
    } finally {
      setRmsNormForwardLayout(previous);
    }
  }
  // Softmax and cross-entropy with one thread per row (CPU adapters' default from 64 rows).
  const layout = setRowLayout("thread");
  try {
    for (const t of floatTypes) await rows(t);
  } finally {
    setRowLayout(layout);
  }
  const matmulConfigs: MatmulConfig[] = [GPU_MATMUL_CONFIG, CPU_MATMUL_CONFIG].flatMap((c) => [
    c,
    { ...c, vec4: false },
    { ...c, shared: !c.shared, vec4: false },
  ]);
  try {
    for (const c of matmulConfigs) {
      mg.setMatmulConfig(c);
      for (const t of floatTypes) await matmuls(t);
    }
  } finally {
    mg.setMatmulConfig(null);
  }
  const attentionConfigs: AttentionConfig[] = [
    DEFAULT_ATTENTION_CONFIG,
    CPU_ATTENTION_CONFIG,
    { rows: 8, lanes: 16 },
  ];
  try {
    for (const c of attentionConfigs) {
      mg.setAttentionConfig(c);
      for (const t of floatTypes) await attentions(t);
    }
  } finally {
    mg.setAttentionConfig(null);
  }
  const beforeModel = mg.memory().liveTensors;
  await model();
  assert.equal(mg.memory().liveTensors, beforeModel, "the model phase leaked tensors");

  const diagnostics = kernelDiagnostics();
  assert.deepEqual(diagnostics, [], "the WGSL compiler reported errors or warnings");
  const compiled = compiledKernelNames();
  const missing = (await kernelNamesInSource()).filter((re) =>
    ![...compiled].some((n) => re.test(n))
  );
  assert.deepEqual(
    missing.map(String),
    [],
    "kernels in the library that this catalogue never compiled: add their op here",
  );
  assert.ok(compiled.size > 60, `only ${compiled.size} kernels compiled`);
  // Every compiled source reads the uniform block only in param_word (through the zero word,
  // core/kernel.ts), and only the accessors generated from the kernel's declaration call it.
  for (const { name, source } of compiledKernelSources()) {
    assert.equal(
      source.match(/params\.w\[/g)?.length,
      2,
      `${name}: uniform reads outside param_word`,
    );
    const entry = source.slice(source.indexOf("@compute"));
    const own = source.split("\n").filter((l) =>
      !l.startsWith("fn param_word(") && !/^fn p_\w+\(/.test(l)
    ).join("\n");
    assert.ok(!/\bparam_word\(|\bprm[fi]?\(/.test(own), `${name}: reads parameters positionally`);
    assert.ok(!/\bparam_word\(/.test(entry), `${name}: body reads parameters positionally`);
  }
  console.log(`${compiledKernelCount()} kernel sources (${compiled.size} names) compiled cleanly`);
  assert.equal(mg.memory().liveTensors, before, "the catalogue leaked tensors");
});
