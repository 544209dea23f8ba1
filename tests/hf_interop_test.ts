/**
 * Hugging Face interop, both directions, against an independent float64 reference of
 * transformers' DeepseekV3ForCausalLM (tests/hf_reference/deepseek_v3.py, NumPy only):
 *
 * (a) moongrad writes → the reference reads: `new KimiLM(configFromHf(json), { seed })` (norm
 *     gains, attention biases and router biases randomised so that none is a no-op), then
 *     `savePretrained` (one case sharded); the reference's logits of that directory, read the
 *     transformers 4.x way and the 5.x way, against moongrad's `forward`.
 * (b) a hand-written HF directory → moongrad reads: the reference's writer makes the directory
 *     (bf16 in 3 shards + index with a 4.x config, f32 in one file with a 5.x config, f16 in 2
 *     shards with a 5.x default-rope config); `KimiLM.fromPretrained` against the reference
 *     reading the same stored values.
 *
 * Every case also runs moongrad's decode path: the latent cache (absorbed kv_b_proj), a prefill
 * of PREFILL tokens and then one token per call, each row against the reference's full forward
 * at that position. The YaRN cases run past original_max_position_embeddings (16 → 24 tokens).
 * A last test compares the rotary tables and softmax scale of the real Kimi K2, DeepSeek-V3 and
 * Moonlight configs (rotary dim 64, real YaRN ramps) with the reference's, no weights needed.
 *
 * Tolerance (f32 GPU vs float64): max |moongrad − reference| ≤ RTOL · max|reference logit| +
 * ATOL over every logit of a case (forward and decode separately), RTOL = 1e-4, ATOL = 1e-5.
 * Measured on Mesa llvmpipe and on Dawn/SwiftShader: 1.2e-6 … 4.8e-6 absolute, 3.8e-7 … 1.4e-6
 * relative to max|logit| ≈ 3–4.3, in every case and on both paths, so the bound (≈ 3.5e-4)
 * leaves ~70×.
 * Bugs it catches, each tried on purpose while writing this test: softmax scale without
 * YaRN's mscale² (error 1.7–2.4), rope_interleave ignored (4.2–4.5), truncate inverted
 * (0.47–3.0), cos/sin attention factor dropped (0.89), a 1 % softmax-scale error in the
 * absorbed decode only (0.023–1.6): all 60× to 10⁴× over the bound.
 *
 * Needs `python3` with NumPy on PATH (CI has both); without them the tests fail saying so.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { KimiLM } from "../nn/model.ts";
import { gpu, seededValues } from "./util.ts";

const REFERENCE = new URL("./hf_reference/deepseek_v3.py", import.meta.url).pathname;
/** Relative part of the logit tolerance (of the case's max |logit|). */
const RTOL = 1e-4;
/** Absolute part of the logit tolerance. */
const ATOL = 1e-5;
/** Tokens of the decode prefill; the rest of each sequence is decoded one token per call. */
const PREFILL = 5;
/**
 * Routing decisions closer than this (in sigmoid-score units) could flip between f32 and
 * float64: the router's inputs differ by about 1e-6 between the two, so 1e-5 leaves 10×.
 */
const MIN_ROUTING_MARGIN = 1e-5;

interface RefInfo {
  transformers: string;
  rope: Record<string, unknown>;
  inv_freq: number[];
  attention_factor: number;
  softmax_scale: number;
  min_group_margin: number | null;
  min_expert_margin: number | null;
  routed_tokens_group_limited: number;
  routed_tokens_bias_changed: number;
}

interface RefOut {
  logits: number[][][];
  info: RefInfo;
}

async function python(args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("python3", {
      args: [REFERENCE, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    throw new Error(
      `hf_interop_test needs python3 (with NumPy) on PATH to run the float64 HF reference ` +
        `${REFERENCE}; CI machines have both. Spawning python3 failed: ${(e as Error).message}`,
    );
  }
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code === 3 || /No module named '?numpy/.test(stderr)) {
    throw new Error(
      `hf_interop_test needs NumPy for python3 (pip install numpy; CI has it): ${stderr.trim()}`,
    );
  }
  if (!out.success) {
    throw new Error(`python3 ${REFERENCE} ${args.join(" ")} failed (${out.code}): ${stderr}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** The reference's logits of a model directory, read as transformers 4.x, 5.x or "auto". */
async function referenceLogits(
  dir: string,
  ids: number[][],
  transformers: "4" | "5" | "auto" = "auto",
): Promise<RefOut> {
  const out = JSON.parse(
    await python(["logits", dir, JSON.stringify(ids), "--transformers", transformers]),
  ) as RefOut;
  const { min_group_margin: g, min_expert_margin: e } = out.info;
  for (const [what, m] of [["group", g], ["expert", e]] as const) {
    assert.ok(
      m === null || m > MIN_ROUTING_MARGIN,
      `${dir}: one ${what} routing decision is within ${m} of a tie: f32 and float64 may route ` +
        "differently; pick another seed or ids for this case",
    );
  }
  return out;
}

interface Err {
  maxErr: number;
  maxRef: number;
}

/** Max |a − ref| and max |ref| over rows [t0, t1) of every batch row. */
function compare(got: ArrayLike<number>, ref: number[][][], t0: number, t1: number): Err {
  const B = ref.length, V = ref[0][0].length, T = t1 - t0;
  assert.equal(got.length, B * T * V, "logit count");
  let maxErr = 0, maxRef = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = ref[b][t0 + t];
      for (let v = 0; v < V; v++) {
        const e = row[v];
        const d = Math.abs(got[(b * T + t) * V + v] - e);
        if (!(d <= maxErr)) maxErr = d; // NaN propagates
        maxRef = Math.max(maxRef, Math.abs(e));
      }
    }
  }
  return { maxErr, maxRef };
}

function merge(a: Err, b: Err): Err {
  return { maxErr: Math.max(a.maxErr, b.maxErr), maxRef: Math.max(a.maxRef, b.maxRef) };
}

function assertWithin(e: Err, what: string): void {
  const bound = RTOL * e.maxRef + ATOL;
  assert.ok(
    e.maxErr <= bound,
    `${what}: max |moongrad − reference| ${e.maxErr.toExponential(2)} > ${
      bound.toExponential(2)
    } (= ${RTOL}·max|logit| ${e.maxRef.toFixed(3)} + ${ATOL})`,
  );
}

function idTensor(ids: number[][], t0 = 0, t1 = ids[0].length): mg.Tensor {
  const rows = ids.map((r) => r.slice(t0, t1));
  return mg.tensor(Int32Array.from(rows.flat()), { shape: [rows.length, t1 - t0] });
}

/** moongrad's full forward of `ids` vs the reference. */
async function fullForward(model: KimiLM, ids: number[][], ref: number[][][]): Promise<Err> {
  const x = idTensor(ids);
  const y = mg.noGrad(() => model.forward(x));
  const d = await y.data();
  x.dispose();
  y.dispose();
  return compare(d, ref, 0, ids[0].length);
}

/**
 * moongrad's latent-cache decode: prefill ids[:, :PREFILL] into fresh caches, then one token
 * per call (positions PREFILL … T−1), every output row vs the reference's full forward.
 */
async function decode(model: KimiLM, ids: number[][], ref: number[][][]): Promise<Err> {
  const T = ids[0].length;
  const caches = model.newCaches(ids.length);
  let err: Err = { maxErr: 0, maxRef: 0 };
  try {
    const steps: [number, number][] = [[0, PREFILL]];
    for (let t = PREFILL; t < T; t++) steps.push([t, t + 1]);
    for (const [t0, t1] of steps) {
      const x = idTensor(ids, t0, t1);
      const y = mg.noGrad(() => model.forward(x, t0, caches));
      x.dispose();
      const d = await y.data();
      y.dispose();
      err = merge(err, compare(d, ref, t0, t1));
    }
    assert.equal(caches[0].length, T, "every token went into the cache");
  } finally {
    for (const c of caches) c.dispose();
  }
  return err;
}

/** Deterministic token ids [B, T] in [0, V). */
function tokenIds(B: number, T: number, V: number, seed: number): number[][] {
  const u = seededValues(B * T, seed, 0, 1);
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: T }, (_, t) => {
      return Math.min(V - 1, Math.floor(u[b * T + t] * V));
    }));
}

/** A micro DeepseekV3 config.json (HF keys); `extra` overrides. */
function microConfig(extra: Record<string, unknown>): Record<string, unknown> {
  return {
    architectures: ["DeepseekV3ForCausalLM"],
    model_type: "deepseek_v3",
    vocab_size: 64,
    hidden_size: 32,
    intermediate_size: 48,
    moe_intermediate_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    n_shared_experts: 1,
    n_routed_experts: 8,
    num_experts_per_tok: 2,
    n_group: 1,
    topk_group: 1,
    first_k_dense_replace: 1,
    norm_topk_prob: true,
    routed_scaling_factor: 2.5,
    kv_lora_rank: 16,
    q_lora_rank: 16,
    qk_nope_head_dim: 8,
    qk_rope_head_dim: 8,
    v_head_dim: 8,
    max_position_embeddings: 64,
    initializer_range: 0.2,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: false,
    rope_interleave: true,
    attention_bias: false,
    rope_theta: 10000,
    rope_scaling: null,
    ...extra,
  };
}

/** YaRN dict of the micro cases: 16 → 64 positions (factor 4). */
const YARN = {
  factor: 4,
  original_max_position_embeddings: 16,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1,
  mscale_all_dim: 1,
};

/** Randomises norm gains, biases and router biases (moongrad initialises them to 1 / 0). */
function perturb(model: KimiLM, seed: number): void {
  const sd = new Map<string, mg.Tensor>();
  let k = 0;
  for (const [name, t] of model.stateDict()) {
    const s = seed * 1000 + k++;
    let v: Float32Array | null = null;
    if (/norm\.weight$/.test(name)) v = seededValues(t.size, s, 0.8, 1.2);
    else if (/e_score_correction_bias$/.test(name)) v = seededValues(t.size, s, -0.05, 0.05);
    else if (/\.bias$/.test(name)) v = seededValues(t.size, s, -0.2, 0.2);
    if (v) sd.set(name, mg.tensor(v, { shape: [...t.shape] }));
  }
  assert.ok(sd.size > 0);
  model.loadStateDict(sd, { strict: false });
  for (const t of sd.values()) t.dispose();
}

/**
 * Checks that a case exercises the routing it claims: the correction bias changed some token's
 * experts (it must only select, never weight), and with n_group > topk_group the group limit
 * changed some token's experts.
 */
function assertRoutingExercised(json: Record<string, unknown>, info: RefInfo, what: string): void {
  assert.ok(info.routed_tokens_bias_changed > 0, `${what}: the correction bias never mattered`);
  if ((json.n_group as number) > (json.topk_group as number)) {
    assert.ok(info.routed_tokens_group_limited > 0, `${what}: the group limit never mattered`);
  }
}

interface Measured {
  name: string;
  full: Err;
  decode: Err;
  info: RefInfo;
}

const measured: Measured[] = [];

function report(m: Measured): void {
  measured.push(m);
  const rel = (e: Err) => (e.maxErr / e.maxRef).toExponential(2);
  console.log(
    `  ${m.name}: full ${m.full.maxErr.toExponential(2)} (rel ${rel(m.full)}), decode ${
      m.decode.maxErr.toExponential(2)
    } (rel ${rel(m.decode)}), max|logit| ${m.full.maxRef.toFixed(3)}; routed tokens whose ` +
      `experts the group limit / the correction bias changed: ${m.info.routed_tokens_group_limited}` +
      ` / ${m.info.routed_tokens_bias_changed}`,
  );
}

interface WriteCase {
  name: string;
  json: Record<string, unknown>;
  seed: number;
  T: number;
  maxShardSize?: number;
  /** Expected reference facts (checks that the case exercises what it claims). */
  expect?: (info: RefInfo) => void;
}

const WRITE_CASES: WriteCase[] = [
  {
    name: "K2-like (group 1/1, q_lora, interleaved RoPE θ 50000), one file",
    json: microConfig({ routed_scaling_factor: 2.827, rope_theta: 50000 }),
    seed: 1,
    T: 12,
  },
  {
    name: "n_group 2 / topk_group 1, attention_bias, q_lora_rank null, sharded",
    json: microConfig({
      hidden_size: 24,
      n_group: 2,
      topk_group: 1,
      attention_bias: true,
      q_lora_rank: null,
    }),
    seed: 2,
    T: 12,
    maxShardSize: 6000,
  },
  {
    name: "YaRN (4.x rope_scaling, θ 10, β 32/1, mscale 1/1), rope_interleave false",
    json: microConfig({
      rope_theta: 10,
      rope_scaling: { type: "yarn", ...YARN },
      rope_interleave: false,
    }),
    seed: 3,
    T: 24,
    expect: (info) => {
      // ramp [0, ½, 1, 1] over the 4 frequencies: a partial blend, not just endpoints
      assert.ok(Math.abs(info.inv_freq[1] - 10 ** -0.25 * (0.5 + 0.5 / 4)) < 1e-12);
      assert.ok(Math.abs(info.softmax_scale - 16 ** -0.5 * (0.1 * Math.log(4) + 1) ** 2) < 1e-12);
    },
  },
  {
    name: "YaRN (5.x rope_parameters, K2's β 1/1, mscale 1/1, θ 50000), 4 experts",
    json: microConfig({
      rope_theta: undefined,
      rope_scaling: undefined,
      rope_parameters: { rope_type: "yarn", rope_theta: 50000, ...YARN, beta_fast: 1 },
      n_routed_experts: 4,
    }),
    seed: 4,
    T: 24,
  },
  {
    name: "YaRN (5.x, no mscales: cos/sin × (0.1 ln 4 + 1), truncate false, θ 10), hidden 16",
    json: microConfig({
      hidden_size: 16,
      n_routed_experts: 4,
      rope_theta: undefined,
      rope_scaling: undefined,
      rope_parameters: {
        rope_type: "yarn",
        rope_theta: 10,
        factor: 4,
        original_max_position_embeddings: 16,
        truncate: false,
      },
    }),
    seed: 5,
    T: 20,
    expect: (info) => {
      assert.ok(Math.abs(info.attention_factor - (0.1 * Math.log(4) + 1)) < 1e-12);
      assert.equal(info.softmax_scale, 16 ** -0.5);
    },
  },
];

for (const c of WRITE_CASES) {
  Deno.test(`HF interop (a) moongrad writes, reference reads: ${c.name}`, async () => {
    await gpu();
    const dir = await Deno.makeTempDir({ prefix: "mg_hf_a_" });
    const json = JSON.parse(JSON.stringify(c.json)); // drops the undefined keys
    const model = new KimiLM(mg.nn.configFromHf(json), { seed: c.seed });
    try {
      perturb(model, c.seed);
      const { files } = await model.savePretrained(dir, { maxShardSize: c.maxShardSize });
      if (c.maxShardSize) assert.ok(files.length > 2, `sharded: ${files}`);
      const ids = tokenIds(2, c.T, json.vocab_size, 100 + c.seed);
      // The saved config.json must mean the same model to transformers 4.x and 5.x.
      const r4 = await referenceLogits(dir, ids, "4");
      const r5 = await referenceLogits(dir, ids, "5");
      assert.deepEqual(r5.info.rope, r4.info.rope, "4.x and 5.x read the same rotary parameters");
      assert.deepEqual(r5.logits, r4.logits, "4.x and 5.x readings give the same logits");
      c.expect?.(r4.info);
      assertRoutingExercised(json, r4.info, c.name);
      const full = await fullForward(model, ids, r4.logits);
      const dec = await decode(model, ids, r4.logits);
      report({ name: `(a) ${c.name}`, full, decode: dec, info: r4.info });
      assertWithin(full, `${c.name}: forward`);
      assertWithin(dec, `${c.name}: latent-cache decode`);
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

interface ReadCase {
  name: string;
  json: Record<string, unknown>;
  seed: number;
  T: number;
  shards: number;
  dtype: "bf16" | "f16" | "f32";
  files: string[];
  transformers: "4" | "5";
}

const READ_CASES: ReadCase[] = [
  {
    name: "bf16 in 3 shards, 4.x config (YaRN θ 10 β 32/1), n_group 2/1, attention_bias",
    json: microConfig({
      torch_dtype: "bfloat16",
      transformers_version: "4.57.1",
      rope_theta: 10,
      rope_scaling: { type: "yarn", ...YARN },
      n_group: 2,
      topk_group: 1,
      attention_bias: true,
    }),
    seed: 11,
    T: 24,
    shards: 3,
    dtype: "bf16",
    files: [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
      "model.safetensors.index.json",
    ],
    transformers: "4",
  },
  {
    name: "f32 in one file, 5.x config (YaRN K2 β 1/1 θ 50000), q_lora_rank null, interleave false",
    json: microConfig({
      dtype: "float32",
      transformers_version: "5.0.0",
      hidden_size: 16,
      rope_theta: undefined,
      rope_scaling: undefined,
      rope_parameters: { rope_type: "yarn", rope_theta: 50000, ...YARN, beta_fast: 1 },
      q_lora_rank: null,
      rope_interleave: false,
    }),
    seed: 12,
    T: 24,
    shards: 1,
    dtype: "f32",
    files: ["model.safetensors"],
    transformers: "5",
  },
  {
    name: "f16 in 2 shards, 5.x config (default RoPE θ 10000 in rope_parameters), 4 experts",
    json: microConfig({
      hidden_size: 24,
      n_routed_experts: 4,
      rope_theta: undefined,
      rope_scaling: undefined,
      rope_parameters: { rope_type: "default", rope_theta: 10000 },
    }),
    seed: 13,
    T: 12,
    shards: 2,
    dtype: "f16",
    files: [
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
    ],
    transformers: "5",
  },
];

for (const c of READ_CASES) {
  Deno.test(`HF interop (b) reference writes, moongrad reads: ${c.name}`, async () => {
    await gpu();
    const dir = await Deno.makeTempDir({ prefix: "mg_hf_b_" });
    const text = JSON.stringify(c.json, null, 2);
    let model: KimiLM | null = null;
    try {
      await python([
        "write",
        dir,
        text,
        String(c.seed),
        "--shards",
        String(c.shards),
        "--dtype",
        c.dtype,
      ]);
      const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(names, ["config.json", ...c.files].sort());
      model = await KimiLM.fromPretrained(dir);
      const ids = tokenIds(2, c.T, 64, 200 + c.seed);
      const ref = await referenceLogits(dir, ids);
      assert.equal(ref.info.transformers, c.transformers, "the reference read the intended form");
      assertRoutingExercised(c.json, ref.info, c.name);
      const full = await fullForward(model, ids, ref.logits);
      const dec = await decode(model, ids, ref.logits);
      report({ name: `(b) ${c.name}`, full, decode: dec, info: ref.info });
      assertWithin(full, `${c.name}: forward`);
      assertWithin(dec, `${c.name}: latent-cache decode`);
    } finally {
      model?.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("HF interop: the real configs' rotary tables and softmax scale match the reference (K2, DeepSeek-V3, Moonlight)", async () => {
  // Full-size rotary dims (64) and real YaRN values, where the micro cases' ramps are trivial:
  // no weights needed, the reference's `rope` command reads the config.json alone.
  for (const name of ["kimi-k2-instruct", "deepseek-v3", "moonlight-16b-a3b-instruct"]) {
    const path = new URL(`./fixtures/${name}/config.json`, import.meta.url).pathname;
    const cfg = await mg.nn.loadConfig(path);
    const ours = mg.nn.rotaryFrequencies(cfg.qk_rope_head_dim, cfg.rope_parameters);
    const scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5 *
      mg.nn.softmaxScaleFactor(cfg.rope_parameters);
    const infos: RefInfo[] = [];
    for (const v of ["4", "5"]) {
      infos.push(JSON.parse(await python(["rope", path, "--transformers", v])) as RefInfo);
    }
    assert.deepEqual(infos[1].rope, infos[0].rope, `${name}: 4.x and 5.x readings agree`);
    const ref = infos[0];
    assert.equal(ref.rope.type, cfg.rope_parameters.rope_type === "yarn" ? "yarn" : "default");
    assert.equal(ours.invFreq.length, ref.inv_freq.length);
    ref.inv_freq.forEach((r, i) => {
      // moongrad rounds its float64 table to f32 once: within one f32 ulp of float64
      assert.ok(
        Math.abs(ours.invFreq[i] - r) <= 2 ** -23 * r,
        `${name}: inv_freq[${i}] ${ours.invFreq[i]} vs ${r}`,
      );
    });
    const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
    assert.ok(rel(ours.attentionFactor, ref.attention_factor) < 1e-14, `${name}: attention factor`);
    assert.ok(rel(scale, ref.softmax_scale) < 1e-14, `${name}: softmax scale`);
  }
});
