/**
 * Safetensors I/O: bit-exact round trips (f32 incl. NaN/Inf/−0/denormal bit patterns, f16,
 * i32, bool), a hand-built file in the reference layout, every corruption giving a clear
 * MoongradError naming the file, atomic writes, config.json, and a model saved and loaded
 * into a differently seeded model giving bit-identical outputs.
 */
import * as mg from "../mod.ts";
import * as nn from "../nn/mod.ts";
import * as io from "../io/mod.ts";
import { gpu, seededValues } from "./util.ts";

async function rejects(p: Promise<unknown>, ...includes: string[]): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected MoongradError, got ${e}`);
    for (const s of includes) {
      if (!e.message.includes(s)) throw new Error(`"${e.message}" does not include "${s}"`);
    }
    return;
  }
  throw new Error(`expected a MoongradError including ${includes.join(", ")}`);
}

function throws(fn: () => unknown, ...includes: string[]): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof mg.MoongradError)) throw new Error(`expected MoongradError, got ${e}`);
    for (const s of includes) {
      if (!e.message.includes(s)) throw new Error(`"${e.message}" does not include "${s}"`);
    }
    return;
  }
  throw new Error(`expected a MoongradError including ${includes.join(", ")}`);
}

/** Builds a safetensors image by hand (independent of the library's writer). */
function handBuilt(
  header: Record<string, unknown>,
  data: Uint8Array,
  pad = true,
): Uint8Array {
  let json = new TextEncoder().encode(JSON.stringify(header));
  if (pad && json.length % 8) {
    const p = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Header entries as the tests read them (tensor entries and `__metadata__` share the map). */
type Header = Record<
  string,
  { dtype: string; shape: number[]; data_offsets: number[]; format?: string; step?: string }
>;

function headerOf(bytes: Uint8Array): { json: Header; dataStart: number } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return {
    json: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    dataStart: 8 + n,
  };
}

const bits32 = (t: Float32Array) => Array.from(new Uint32Array(t.buffer, t.byteOffset, t.length));

Deno.test("serialize -> parse -> serialize is bit-exact for f32 (NaN/Inf/-0/denormal), f16, i32, bool", async () => {
  const info = await gpu();
  const special = new Uint32Array([
    0x7fc00001, // NaN with payload
    0xff800000, // -Inf
    0x7f800000, // +Inf
    0x80000000, // -0
    0x00000001, // smallest denormal
    0x3f800000, // 1
  ]);
  const f = new Float32Array(special.buffer);
  const tensors: Record<string, mg.Tensor> = {
    "a.special": mg.tensor(f, { shape: [2, 3] }),
    "a.rand": mg.tensor(seededValues(35, 1, -5, 5), { shape: [5, 7] }),
    "b.ids": mg.tensor(new Int32Array([-2147483648, -1, 0, 7, 2147483647]), { dtype: "i32" }),
    "c.mask": mg.tensor([[true, false, true]]),
    "d.scalar": mg.tensor(3.5),
    "e.empty": mg.zeros([0, 4]),
  };
  if (info.f16) {
    tensors["f.half"] = mg.tensor(seededValues(9, 2, -70000, 70000), {
      shape: [3, 3],
      dtype: "f16",
    });
  }
  const bytes = await io.serializeSafetensors(tensors, { metadata: { step: "12" } });
  const { json, dataStart } = headerOf(bytes);
  if (dataStart % 8 !== 0) throw new Error("data must start 8-byte aligned");
  if (json.__metadata__.format !== "pt" || json.__metadata__.step !== "12") {
    throw new Error(JSON.stringify(json.__metadata__));
  }
  const sp = json["a.special"];
  if (sp.dtype !== "F32" || sp.shape.join() !== "2,3") throw new Error(JSON.stringify(sp));
  const raw = bytes.slice(dataStart + sp.data_offsets[0], dataStart + sp.data_offsets[1]);
  if (bits32(new Float32Array(raw.buffer)).join() !== Array.from(special).join()) {
    throw new Error("special f32 bit patterns changed on save");
  }
  if (
    json["c.mask"].dtype !== "BOOL" ||
    json["c.mask"].data_offsets[1] - json["c.mask"].data_offsets[0] !== 3
  ) {
    throw new Error("bool is stored as one byte per element");
  }
  if (json["d.scalar"].shape.length !== 0) throw new Error("scalar shape []");
  const back = io.parseSafetensors(bytes);
  if ([...back.keys()].sort().join() !== Object.keys(tensors).sort().join()) {
    throw new Error("names");
  }
  for (const [name, t] of back) {
    const src = tensors[name];
    if (t.dtype !== src.dtype || t.shape.join() !== src.shape.join()) {
      throw new Error(`${name}: ${t.dtype} [${t.shape}] != ${src.dtype} [${src.shape}]`);
    }
  }
  const again = await io.serializeSafetensors(back, { metadata: { step: "12" } });
  if (again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) {
    throw new Error("second serialization differs from the first");
  }
  const sb = bits32(await back.get("a.special")!.data() as Float32Array);
  if (sb.join() !== Array.from(special).join()) throw new Error("special bits changed on load");
  for (const t of [...Object.values(tensors), ...back.values()]) t.dispose();
});

Deno.test("a hand-built file (unpadded header, BF16 widened to f32, unsorted offsets) parses", async () => {
  await gpu();
  const w = new Float32Array([1.5, -2, 0.25, 8]);
  const bf = new Uint16Array([0x3fc0, 0xc000]); // 1.5, -2 in bfloat16
  const ids = new Int32Array([4, -9]);
  const data = new Uint8Array(16 + 4 + 8);
  data.set(new Uint8Array(ids.buffer), 0);
  data.set(new Uint8Array(w.buffer), 8);
  data.set(new Uint8Array(bf.buffer), 24);
  const bytes = handBuilt(
    {
      "w": { dtype: "F32", shape: [2, 2], data_offsets: [8, 24] },
      "ids": { dtype: "I32", shape: [2], data_offsets: [0, 8] },
      "bf": { dtype: "BF16", shape: [2], data_offsets: [24, 28] },
    },
    data,
    false,
  );
  const m = io.parseSafetensors(bytes, "hand.safetensors");
  if ((await m.get("w")!.toArray() as number[][]).flat().join() !== "1.5,-2,0.25,8") {
    throw new Error("w");
  }
  if (Array.from(await m.get("ids")!.data()).join() !== "4,-9") throw new Error("ids");
  const b = m.get("bf")!;
  if (b.dtype !== "f32" || Array.from(await b.data()).join() !== "1.5,-2") throw new Error("bf16");
  const dec = io.decodeSafetensors(bytes);
  if (dec.metadata !== null || dec.entries.get("bf")!.fileDtype !== "BF16") {
    throw new Error("decode");
  }
  for (const t of m.values()) t.dispose();
});

Deno.test("corrupt files give a MoongradError naming the file and the problem", async () => {
  await gpu();
  const good = handBuilt(
    { x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } },
    new Uint8Array(8),
  );
  const f = "model.safetensors";
  throws(
    () => io.parseSafetensors(good.slice(0, 5), f),
    f,
    "shorter than the 8-byte header length",
  );
  throws(() => io.parseSafetensors(good.slice(0, 20), f), f, "exceeds", "truncated");
  throws(
    () => io.parseSafetensors(good.slice(0, good.length - 3), f),
    f,
    "outside the 5 data bytes",
  );
  const badJson = good.slice();
  badJson[9] = 0x7b; // '{' inside the header: invalid JSON
  badJson[10] = 0x7b;
  throws(() => io.parseSafetensors(badJson, f), f, "not valid UTF-8 JSON");
  const hugeLen = good.slice();
  new DataView(hugeLen.buffer).setBigUint64(0, 1n << 40n, true);
  throws(() => io.parseSafetensors(hugeLen, f), f, "header length");
  throws(
    () =>
      io.parseSafetensors(
        handBuilt({ x: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)),
        f,
      ),
    f,
    '"F64"',
    "supported: F32, F16",
  );
  throws(
    () =>
      io.parseSafetensors(
        handBuilt({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        f,
      ),
    "spans 8 bytes but F32 [3] needs 12",
  );
  throws(
    () =>
      io.parseSafetensors(
        handBuilt({ x: { dtype: "F32", shape: [2], data_offsets: [0, 16] } }, new Uint8Array(8)),
        f,
      ),
    "outside the 8 data bytes",
  );
  throws(
    () =>
      io.parseSafetensors(
        handBuilt({
          x: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          y: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
        }, new Uint8Array(8)),
        f,
      ),
    "overlap",
  );
  throws(
    () =>
      io.parseSafetensors(
        handBuilt([] as unknown as Record<string, unknown>, new Uint8Array(0)),
        f,
      ),
    "JSON object",
  );
  throws(
    () =>
      io.parseSafetensors(
        handBuilt({ x: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }, new Uint8Array(0)),
        f,
      ),
    "non-negative integers",
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/cut.safetensors`, good.slice(0, 30));
    await rejects(
      io.loadSafetensors(`${dir}/cut.safetensors`),
      "loadSafetensors",
      "cut.safetensors",
    );
    await rejects(
      io.loadSafetensors(`${dir}/missing.safetensors`),
      "could not read",
      "missing.safetensors",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writes are atomic: a failed save leaves no temporary file and keeps the old one", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  try {
    const lin = new nn.Linear(3, 2, { seed: 1 });
    const path = `${dir}/w.safetensors`;
    await io.saveSafetensors(path, lin);
    const first = await Deno.readFile(path);
    // Fails after the temporary file is written: the target is a directory, rename fails.
    await Deno.mkdir(`${dir}/taken.safetensors`);
    await rejects(
      io.saveSafetensors(`${dir}/taken.safetensors`, lin),
      "saveSafetensors",
      "could not write",
    );
    // Fails before writing: a disposed tensor; the old file must be untouched.
    const gone = mg.zeros([2]);
    gone.dispose();
    await rejects(io.saveSafetensors(path, { gone }), "was disposed");
    // Fails while writing: the directory does not exist.
    await rejects(io.saveSafetensors(`${dir}/nope/w.safetensors`, lin), "could not write");
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    if (names.sort().join() !== "taken.safetensors,w.safetensors") {
      throw new Error(`left behind: ${names.join()}`);
    }
    const still = await Deno.readFile(path);
    if (still.length !== first.length || still.some((b, i) => b !== first[i])) {
      throw new Error("the old file changed");
    }
    lin.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

class Net extends nn.Module {
  readonly norm: nn.RMSNorm;
  readonly up: nn.Linear;
  readonly mlp: nn.MLP;
  readonly head: nn.Linear;
  constructor(seed: number) {
    super();
    this.norm = this.module("norm", new nn.RMSNorm(6));
    this.up = this.module("up", new nn.Linear(6, 10, { seed, std: 0.3 }));
    this.mlp = this.module("mlp", new nn.MLP(10, 14, { seed: seed + 1, std: 0.3 }));
    this.head = this.module("head", new nn.Linear(10, 4, { bias: false, seed: seed + 2 }));
  }
  forward(x: mg.Tensor): mg.Tensor {
    return mg.scope(() =>
      this.head.forward(this.mlp.forward(this.up.forward(this.norm.forward(x))))
    );
  }
}

Deno.test("a model saved and loaded into a differently seeded one gives identical outputs; config.json", async () => {
  await gpu();
  const dir = await Deno.makeTempDir();
  try {
    const a = new Net(1);
    // Make the norm gain non-trivial so it is really saved.
    a.norm.weight.assign(mg.tensor(seededValues(6, 4, 0.5, 1.5)).keep());
    const b = new Net(99);
    const x = mg.tensor(seededValues(3 * 6, 5, -2, 2), { shape: [3, 6] });
    const ya = await a.forward(x).data();
    const yb0 = await b.forward(x).data();
    if (ya.every((v, i) => v === yb0[i])) {
      throw new Error("the two models must differ before loading");
    }
    const config = { model_type: "deepseek_v3", hidden_size: 6, initializer_range: 0.02 };
    await io.saveSafetensors(`${dir}/model.safetensors`, a, { config, metadata: { note: "t" } });
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    if (JSON.stringify(cfg) !== JSON.stringify(config)) throw new Error("config.json");
    const r = await io.loadInto(b, `${dir}/model.safetensors`);
    if (r.missing.length || r.unexpected.length) throw new Error(JSON.stringify(r));
    const yb = await b.forward(x).data();
    if (ya.some((v, i) => v !== yb[i])) throw new Error("outputs differ after loading");
    const hdr = await io.readSafetensorsHeader(`${dir}/model.safetensors`);
    if (
      hdr.metadata?.note !== "t" ||
      hdr.entries.get("mlp.down_proj.weight")!.shape.join() !== "10,14"
    ) {
      throw new Error("header");
    }
    const all = await io.loadSafetensors(`${dir}/model.safetensors`);
    if ([...all.keys()].sort().join() !== [...a.stateDict().keys()].sort().join()) {
      throw new Error("keys");
    }
    for (const t of all.values()) t.dispose();
    // loadInto into a mismatching model lists every problem, with the file name.
    class Other extends nn.Module {
      readonly up = this.module("up", new nn.Linear(6, 11));
      readonly extra = this.module("extra", new nn.RMSNorm(2));
    }
    const o = new Other();
    await rejects(
      io.loadInto(o, `${dir}/model.safetensors`),
      "loadInto",
      "model.safetensors does not match Other",
      "shape mismatch for up.weight: expected [11, 6], got [10, 6]",
      "shape mismatch for up.bias",
      "missing extra.weight",
      "unexpected head.weight",
      "unexpected mlp.gate_proj.weight",
    );
    for (const m of [a, b, o]) m.dispose();
    x.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
