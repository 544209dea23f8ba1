/**
 * The kernel parameter builder (core/params.ts): word layout and packing round-trips, f32/i32
 * bit casts, array bounds, the errors for bad values and oversized declarations, the WGSL it
 * generates (every read through the reserved zero word), and a kernel that reads every kind
 * of parameter by name on the GPU.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { kernel, kernelSource, PARAM_WORDS, PARAM_ZERO_WORD } from "../core/kernel.ts";
import { PARAM_USABLE_WORDS, params } from "../core/params.ts";
import { dispatch } from "../core/runtime.ts";
import { gpu } from "./util.ts";

const f32Bits = (v: number) => new Uint32Array(new Float32Array([v]).buffer)[0];
const i32Bits = (v: number) => new Uint32Array(new Int32Array([v]).buffer)[0];

Deno.test("params: words are laid out in declaration order and pack round-trips", () => {
  const P = params("t", { rows: "u32", eps: "f32", pos: "i32", shape: ["u32", 4], w: ["f32", 2] });
  assert.equal(P.words, 1 + 1 + 1 + 4 + 2);
  assert.deepEqual({ ...P.offsets }, { rows: 0, eps: 1, pos: 2, shape: 3, w: 7 });
  const words = P.pack({ rows: 7, eps: 0.1, pos: -3, shape: [2, 3, 5], w: [-1.5, Infinity] });
  assert.equal(words.length, PARAM_WORDS);
  assert.equal(words[0], 7);
  assert.equal(words[1], f32Bits(0.1));
  assert.equal(new Float32Array(words.buffer)[1], Math.fround(0.1));
  assert.equal(words[2], i32Bits(-3));
  assert.equal(new Int32Array(words.buffer)[2], -3);
  assert.deepEqual(Array.from(words.subarray(3, 7)), [2, 3, 5, 0], "short arrays pad with 0");
  assert.deepEqual(Array.from(new Float32Array(words.buffer, 7 * 4, 2)), [-1.5, Infinity]);
  assert.ok(words.subarray(9).every((w) => w === 0), "unused words and word 63 stay 0");
  assert.equal(words[PARAM_ZERO_WORD], 0);
  assert.equal(
    P.pack({ rows: true, eps: NaN, pos: 0, shape: [], w: [] })[0],
    1,
    "u32 takes a boolean",
  );
  assert.ok(
    Number.isNaN(
      new Float32Array(P.pack({ rows: 0, eps: NaN, pos: 0, shape: [], w: [] }).buffer)[1],
    ),
  );
  // Extremes of each integer kind.
  const E = params("t", { u: "u32", i: "i32", j: "i32" });
  const e = E.pack({ u: 0xffffffff, i: -0x80000000, j: 0x7fffffff });
  assert.deepEqual(Array.from(e.subarray(0, 3)), [0xffffffff, 0x80000000, 0x7fffffff]);
});

Deno.test("params: bad values throw a MoongradError naming the kernel and the parameter", () => {
  const P = params("my_kernel", { n: "u32", k: "i32", s: "f32", dims: ["u32", 3] });
  const ok = { n: 1, k: 1, s: 1, dims: [1] };
  const bad = (v: Record<string, unknown>, re: RegExp) =>
    assert.throws(
      () => P.pack({ ...ok, ...v } as typeof ok),
      (e: Error) =>
        e instanceof mg.MoongradError && /^moongrad\.my_kernel: /.test(e.message) &&
        re.test(e.message),
    );
  bad({ n: undefined }, /"n" is missing; expected u32/);
  bad({ n: -1 }, /"n" is -1; expected an integer in \[0, 4294967295\]/);
  bad({ n: 2.5 }, /"n" is 2.5/);
  bad({ n: 2 ** 32 }, /"n" is 4294967296/);
  bad({ n: NaN }, /"n" is NaN/);
  bad(
    { k: 2 ** 31 },
    /"k" is 2147483648; expected an integer in \[-2147483648, 2147483647\] \(i32\)/,
  );
  bad({ k: true }, /"k" is a boolean; expected i32/);
  bad({ s: "1" }, /"s" is a string; expected f32/);
  bad({ dims: [1, 2, 3, 4] }, /"dims" has 4 values \[1, 2, 3, 4\]; it holds at most 3/);
  bad({ dims: [1, -2] }, /"dims\[1\]" is -2/);
  bad({ dims: 3 }, /"dims" is number; expected an array of up to 3 u32/);
  bad({ extra: 1 }, /unknown parameter "extra"; declared: n, k, s, dims/);
  // The TypeScript signature checks names and kinds too.
  // @ts-expect-error a missing parameter is a type error
  assert.throws(() => P.pack({ n: 1, k: 1, s: 1 }), /"dims" is missing/);
  // @ts-expect-error a misspelled parameter is a type error
  assert.throws(() => P.pack({ n: 1, k: 1, s: 1, dim: [1] }), /"dims" is missing/);
  // @ts-expect-error an array parameter takes an array
  assert.throws(() => P.pack({ n: 1, k: 1, s: 1, dims: 1 }), /"dims" is number/);
});

Deno.test("params: a declaration over 63 words, a bad name, kind or length is an error where it is declared", () => {
  assert.equal(PARAM_USABLE_WORDS, PARAM_ZERO_WORD);
  assert.equal(params("fits", { a: ["u32", 62], b: "f32" }).words, 63);
  assert.equal(params("fits", { n: "u32", shape: ["u32", 31], strides: ["u32", 31] }).words, 63);
  assert.throws(
    () => params("too_big", { n: "u32", rank: "u32", shape: ["u32", 31], strides: ["u32", 31] }),
    /moongrad\.too_big: parameters take 64 words \(n: 1, rank: 1, shape: 31, strides: 31\); the uniform block holds 63/,
  );
  assert.throws(() => params("k", { "bad-name": "u32" }), /parameter name "bad-name"/);
  assert.throws(() => params("k", { x: ["u32", 0] }), /array parameter "x" has length 0/);
  // @ts-expect-error only u32, i32 and f32
  assert.throws(() => params("k", { x: "f16" }), /parameter "x" has kind f16/);
});

Deno.test("params: the accessors read by name through the reserved zero word; arrays clamp their index", () => {
  const P = params("t", {
    rows: "u32",
    eps: "f32",
    pos: "i32",
    shape: ["u32", 8],
    bias: ["f32", 2],
  });
  assert.equal(
    P.wgsl,
    [
      "fn p_rows() -> u32 { return param_word(0u); }",
      "fn p_eps() -> f32 { return bitcast<f32>(param_word(1u)); }",
      "fn p_pos() -> i32 { return bitcast<i32>(param_word(2u)); }",
      "fn p_shape(i: u32) -> u32 { return param_word(3u + min(i, 7u)); }",
      "fn p_bias(i: u32) -> f32 { return bitcast<f32>(param_word(11u + min(i, 1u))); }",
    ].join("\n"),
  );
  const src = kernelSource({ name: "t", bindings: [], workgroupSize: [1], body: "", params: P });
  assert.match(
    src,
    /fn param_word\(i: u32\) -> u32 \{ let j = i \+ params\.w\[15\]\[3\]; return params\.w\[j >> 2u\]\[j & 3u\]; \}/,
  );
  assert.ok(src.includes(P.wgsl));
  // The only uniform reads in the source are param_word's: the zero word, then word j.
  assert.equal(src.match(/params\.w\[/g)?.length, 2);
});

Deno.test("params: a kernel reads u32, i32, f32 scalars and arrays by name (dynamic index) as packed", async () => {
  await gpu();
  const P = params("params_by_name", {
    n: "u32",
    bias: "f32",
    shift: "i32",
    dims: ["u32", 5],
    offs: ["i32", 3],
    scales: ["f32", 4],
  });
  const k = kernel({
    name: "params_by_name",
    bindings: [{ name: "o", type: "f32", access: "read_write" }],
    workgroupSize: [1],
    params: P,
    body: `
  o[0] = f32(p_n());
  o[1] = p_bias();
  o[2] = f32(p_shift());
  for (var i = 0u; i < p_n(); i++) {
    o[3u + i] = f32(p_dims(i)) + p_scales(i % 4u) * f32(p_offs(i % 3u));
  }
  o[8] = f32(p_dims(99u));`,
  });
  const n = 5;
  const values = {
    n,
    bias: -0.375,
    shift: -123456,
    dims: [4000000000, 1, 2, 3, 65536],
    offs: [-7, 0, 11],
    scales: [0.5, -2, 3.25, 1e-3],
  };
  const out = mg.zeros([9]);
  dispatch(k, [out.storage().buf], P.pack(values), [1]);
  const expected = [n, values.bias, values.shift];
  for (let i = 0; i < n; i++) {
    expected.push(
      Math.fround(values.dims[i] + Math.fround(values.scales[i % 4] * values.offs[i % 3])),
    );
  }
  expected.push(values.dims[4]); // an index past the end reads the last element
  const got = Array.from(await out.data());
  got.forEach((v, i) =>
    assert.ok(
      Math.abs(v - expected[i]) <= 1e-6 * Math.abs(expected[i]),
      `o[${i}] = ${v}, expected ${expected[i]}`,
    )
  );
  // New values, same pipeline: parameters are run-time values.
  const { compiledKernelCount } = await import("../core/kernel.ts");
  const count = compiledKernelCount();
  dispatch(k, [out.storage().buf], P.pack({ ...values, n: 1, bias: 2 }), [1]);
  const again = await out.data();
  assert.deepEqual([again[0], again[1]], [1, 2]);
  assert.equal(compiledKernelCount(), count);
  out.dispose();
});
