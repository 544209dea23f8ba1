/**
 * Hugging Face style model directories (io/pretrained.ts, KimiLM.fromPretrained /
 * savePretrained): save → load gives bit-identical logits, single file and sharded (+ index);
 * a directory written by an independent helper the way transformers lays one out (4.x config
 * with remote-code metadata, bf16 and f16 shards, an index, an MTP layer to skip) loads to the
 * exact same model; problems are errors naming the file and tensor.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { configFromHf } from "../nn/hf_config.ts";
import { KimiLM } from "../nn/model.ts";
import { planShards } from "../io/pretrained.ts";
import { gpu, seededValues } from "./util.ts";

/** A tiny HF-style config.json: 2 layers (dense, then MoE with group-limited routing). */
const HF_JSON = {
  architectures: ["DeepseekV3ForCausalLM"],
  model_type: "deepseek_v3",
  auto_map: { AutoConfig: "configuration_deepseek.DeepseekV3Config" },
  torch_dtype: "bfloat16",
  transformers_version: "4.46.3",
  vocab_size: 32,
  hidden_size: 24,
  intermediate_size: 48,
  moe_intermediate_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  n_routed_experts: 4,
  num_experts_per_tok: 2,
  n_group: 2,
  topk_group: 1,
  first_k_dense_replace: 1,
  kv_lora_rank: 8,
  q_lora_rank: 12,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 4,
  v_head_dim: 8,
  max_position_embeddings: 64,
  initializer_range: 0.2,
  rope_theta: 10000,
  rope_scaling: null,
  attention_bias: true,
  num_nextn_predict_layers: 1,
  rms_norm_eps: 1e-6,
};

function ids(values: number[][]): mg.Tensor {
  return mg.tensor(Int32Array.from(values.flat()), { shape: [values.length, values[0].length] });
}

async function logits(model: KimiLM): Promise<ArrayLike<number>> {
  const x = ids([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]);
  const y = mg.noGrad(() => model.forward(x));
  const d = await y.data();
  x.dispose();
  y.dispose();
  return d;
}

/** Round-to-nearest-even f32 → bf16 bits. */
function bf16Bits(v: number): number {
  const u = new Uint32Array(Float32Array.of(v).buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * An independent safetensors writer (not moongrad's): tensors as [name, dtype, shape, bytes],
 * header padded with spaces to 8 bytes, data in the given order.
 */
function writeSafetensors(items: [string, string, number[], Uint8Array][]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let off = 0;
  for (const [name, dtype, shape, bytes] of items) {
    header[name] = { dtype, shape, data_offsets: [off, off + bytes.byteLength] };
    off += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  while (json.length % 8) json += " ";
  const h = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + h.byteLength + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.byteLength), true);
  out.set(h, 8);
  let at = 8 + h.byteLength;
  for (const [, , , bytes] of items) {
    out.set(bytes, at);
    at += bytes.byteLength;
  }
  return out;
}

Deno.test("savePretrained → fromPretrained: identical logits, single file; config.json is toHfConfig", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  const config = configFromHf(HF_JSON);
  const a = new KimiLM(config, { seed: 4 });
  try {
    const { files } = await a.savePretrained(`${dir}/out/`); // created, trailing slash ok
    assert.deepEqual(files, ["model.safetensors"]);
    const names = [...Deno.readDirSync(`${dir}/out`)].map((e) => e.name).sort();
    assert.deepEqual(names, ["config.json", "model.safetensors"]);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/out/config.json`));
    assert.deepEqual(cfg, JSON.parse(JSON.stringify(mg.nn.toHfConfig(config))));
    const b = await KimiLM.fromPretrained(`${dir}/out`, { seed: 9 });
    assert.deepEqual(await logits(b), await logits(a));
    b.dispose();
  } finally {
    a.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("savePretrained shards above maxShardSize (HF names + index); both forms load; re-save cleans up", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  const config = configFromHf(HF_JSON);
  const a = new KimiLM(config, { seed: 5 });
  try {
    const sd = a.stateDict();
    const total = [...sd.values()].reduce((s, t) => s + 4 * t.size, 0);
    const { files, totalSize } = await a.savePretrained(dir, { maxShardSize: 8000 });
    assert.equal(totalSize, total);
    const n = files.length - 1;
    assert.ok(n >= 3, `${n} shards`);
    const pad = (i: number) => String(i).padStart(5, "0");
    const shards = Array.from(
      { length: n },
      (_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`,
    );
    assert.deepEqual(files.sort(), [...shards, "model.safetensors.index.json"].sort());
    const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
    assert.equal(index.metadata.total_size, total);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...sd.keys()].sort());
    // Every shard holds exactly what the index says, and stays under the limit unless it is a
    // single oversized tensor.
    for (const f of shards) {
      const { entries } = mg.io.decodeSafetensors(await Deno.readFile(`${dir}/${f}`), f);
      const listed = Object.entries(index.weight_map).filter(([, v]) => v === f).map(([k]) => k);
      assert.deepEqual([...entries.keys()].sort(), listed.sort());
      const bytes = [...entries.values()].reduce((s, e) => s + e.bytes.byteLength, 0);
      assert.ok(bytes <= 8000 || entries.size === 1, `${f}: ${bytes} bytes`);
    }
    const b = await KimiLM.fromPretrained(dir);
    assert.deepEqual(await logits(b), await logits(a));
    b.dispose();
    // Saving again unsharded into the same directory removes the old shards and index.
    await a.savePretrained(dir);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["config.json", "model.safetensors"]);
    const c = await KimiLM.fromPretrained(dir);
    assert.deepEqual(await logits(c), await logits(a));
    c.dispose();
  } finally {
    a.dispose();
    await Deno.remove(dir, { recursive: true });
  }
  // transformers' grouping: a new shard when the next tensor would overflow; big ones alone.
  assert.deepEqual(planShards([["a", 4], ["b", 4], ["c", 9], ["d", 1], ["e", 1]], 8), [
    ["a", "b"],
    ["c"],
    ["d", "e"],
  ]);
});

Deno.test("a hand-written HF-style directory (bf16 + f16 shards, index, MTP layer, 4.x config) loads exactly", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  const config = configFromHf(HF_JSON);
  // The expected model: seeded weights rounded to what the files hold (bf16, or f16 for norms).
  const want = new KimiLM(config, { seed: 8 });
  const items: [string, string, number[], Uint8Array][] = [];
  try {
    const sd = want.stateDict();
    const rounded = new Map<string, mg.Tensor>();
    let k = 0;
    for (const [name, t] of sd) {
      const v = seededValues(t.size, 100 + k++, -0.4, 0.4);
      if (name.endsWith("norm.weight")) {
        const h = Float16Array.from(v, (x) => 1 + x);
        rounded.set(name, mg.tensor(Float32Array.from(h), { shape: t.shape }));
        items.push([name, "F16", [...t.shape], new Uint8Array(h.buffer)]);
      } else {
        const bits = Uint16Array.from(v, bf16Bits);
        const f = new Float32Array(new Uint32Array(Uint32Array.from(bits, (b) => b << 16)).buffer);
        rounded.set(name, mg.tensor(f, { shape: t.shape }));
        items.push([name, "BF16", [...t.shape], new Uint8Array(bits.buffer)]);
      }
    }
    want.loadStateDict(rounded);
    for (const t of rounded.values()) t.dispose();
    // The MTP layer (model.layers.2.*) transformers skips, plus an f32 tensor of it.
    items.push(["model.layers.2.eh_proj.weight", "BF16", [24, 48], new Uint8Array(24 * 48 * 2)]);
    items.push(["model.layers.2.enorm.weight", "F32", [24], new Uint8Array(24 * 4)]);
    // Three shards in a scrambled order, with HF's names and an index.
    const shards: typeof items[] = [[], [], []];
    items.forEach((it, i) => shards[(i * 7) % 3].push(it));
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (let s = 0; s < 3; s++) {
      const f = `model-0000${s + 1}-of-00003.safetensors`;
      await Deno.writeFile(`${dir}/${f}`, writeSafetensors(shards[s]));
      for (const [name, , , bytes] of shards[s]) {
        weightMap[name] = f;
        total += bytes.byteLength;
      }
    }
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }),
    );
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(HF_JSON, null, 2));
    const got = await KimiLM.fromPretrained(dir);
    assert.deepEqual(got.config.hf_metadata.auto_map, HF_JSON.auto_map);
    assert.deepEqual(await logits(got), await logits(want));
    got.dispose();

    // Problems are errors naming the file / tensor.
    const rm = async (name: string) => {
      const wm = { ...weightMap };
      delete wm[name];
      await Deno.writeTextFile(
        `${dir}/model.safetensors.index.json`,
        JSON.stringify({ metadata: { total_size: total }, weight_map: wm }),
      );
    };
    await rm("model.layers.1.self_attn.o_proj.bias");
    await assert.rejects(
      () => KimiLM.fromPretrained(dir),
      /fromPretrained.*model\.layers\.1\.self_attn\.o_proj\.bias/s,
    );
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...HF_JSON, quantization_config: { quant_method: "fp8" } }),
    );
    await assert.rejects(() => KimiLM.fromPretrained(dir), /quantization_config.*fp8/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...HF_JSON, hidden_size: 16 }));
    await assert.rejects(() => KimiLM.fromPretrained(dir), /fromPretrained.*shape/s);
    await Deno.remove(`${dir}/model.safetensors.index.json`);
    await assert.rejects(() => KimiLM.fromPretrained(dir), /neither model\.safetensors/);
    await assert.rejects(() => KimiLM.fromPretrained(`${dir}/nope`), /no config\.json/);
  } finally {
    want.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});
