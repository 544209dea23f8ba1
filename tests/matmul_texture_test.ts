/**
 * The CPU adapters' texture matmul (ops/matmul_texture.ts): operands packed into rgba32float
 * textures, then a tiled product reading them with textureLoad. Forced on and off here, it
 * must give the storage kernel's result bit for bit (both are the fma chain over k in order),
 * through transposed and offset views, with and without an accumulated operand (addmm, a
 * folded gradient), and both gradients of a matmul; the float64 reference checks the values.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { runtimeStats } from "../core/runtime.ts";
import {
  setMatmulTextures,
  setTextureReads,
  TEXTURE_MATMUL,
  textureLayout,
  textureReads,
  textureTile,
} from "../ops/matmul_texture.ts";
import { countDispatches, f32Bits as bits, gpu, seededTensor as consts } from "./util.ts";
import { gram } from "../ops/gram.ts";
import { acquireTexture, releaseTexture } from "../core/textures.ts";
import { groupedMatmul } from "../ops/moe.ts";

await gpu();

/** Runs `fn` with the texture path forced on and off; returns both results' bits. */
async function bothPaths(fn: () => mg.Tensor[]) {
  const run = async (on: boolean) => {
    const previous = setMatmulTextures(on);
    try {
      const outs = fn();
      const values = await Promise.all(outs.map((t) => t.data()));
      outs.forEach((t) => t.dispose());
      return values.map((v) => bits(v as Float32Array));
    } finally {
      setMatmulTextures(previous);
    }
  };
  return { textures: await run(true), storage: await run(false) };
}

/** The texture layout of the 2-D product l·r (views read through their strides). */
function layoutOf(l: mg.Tensor, r: mg.Tensor) {
  return textureLayout({
    M: l.shape[0],
    N: r.shape[1],
    K: l.shape[1],
    batches: 1,
    a: { t: l, offset: l.offset, rowStride: l.strides[0], colStride: l.strides[1] },
    aBatchStride: 0,
    b: { t: r, offset: r.offset, rowStride: r.strides[0], colStride: r.strides[1] },
    bBatchStride: 0,
  }, true);
}

/** float64 reference of a [M, K] · [K, N] product. */
function ref(a: ArrayLike<number>, b: ArrayLike<number>, M: number, K: number, N: number) {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[m * K + k] * b[k * N + n];
      out[m * N + n] = s;
    }
  }
  return out;
}

Deno.test("texture matmul = storage matmul bit for bit, and the float64 reference", async () => {
  for (
    const [M, K, N] of [[1, 1, 1], [5, 7, 9], [33, 20, 17], [64, 64, 64], [70, 130, 45]] as const
  ) {
    const a = consts([M, K], 1), b = consts([K, N], 2);
    const r = await bothPaths(() => [a.matmul(b)]);
    assert.deepEqual(r.textures, r.storage, `[${M}, ${K}] · [${K}, ${N}]`);
    const want = ref(await a.data(), await b.data(), M, K, N);
    const got = new Float32Array(new Uint32Array(r.textures[0]).buffer);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    assert.ok(worst < 1e-5 * Math.sqrt(K), `[${M}, ${K}, ${N}]: max error ${worst}`);
    for (const t of [a, b]) t.dispose();
  }
});

Deno.test("texture matmul reads transposed and offset views, and adds an operand (addmm)", async () => {
  const at = consts([40, 24], 3).transpose(); // [24, 40] read through strides
  const base = consts([50, 33], 4);
  const b = base.slice(0, 10, 50).slice(1, 2, 32); // [40, 30] at an offset
  const c = consts([24, 30], 5);
  const r = await bothPaths(() => [at.matmul(b), mg.addmm(c, at, b)]);
  assert.deepEqual(r.textures, r.storage);
  for (const t of [at, base, b, c]) t.dispose();
});

Deno.test("texture matmul: both gradients, with the accumulated gradient folded in", async () => {
  const grads = async (on: boolean) => {
    const previous = setMatmulTextures(on);
    try {
      const a = consts([24, 36], 6).requiresGrad_();
      const w = consts([36, 20], 7).requiresGrad_();
      // a feeds two products: its second gradient is folded into the first's epilogue.
      const y = a.matmul(w).sum().add(a.matmul(consts([36, 4], 8)).sum());
      y.backward();
      const out = [bits(await a.grad!.data()), bits(await w.grad!.data())];
      for (const t of [a, w, y]) t.dispose();
      return out;
    } finally {
      setMatmulTextures(previous);
    }
  };
  assert.deepEqual(await grads(true), await grads(false));
});

Deno.test("texture matmul: two packs and one product; used on CPU adapters for large products only", () => {
  const a = consts([32, 32], 9), b = consts([32, 32], 10);
  const previous = setMatmulTextures(true);
  try {
    const before = runtimeStats().dispatches;
    const counts = countDispatches(() => a.matmul(b).dispose());
    assert.equal(runtimeStats().dispatches - before, 3);
    assert.equal(counts.get("matmul_pack"), 2);
    assert.equal(counts.get("matmul_texture"), 1);
  } finally {
    setMatmulTextures(previous);
  }
  // Which products take it (textureLayout reads only sizes and strides).
  const cpu = mg.deviceInfo().isFallbackAdapter;
  const rowMajor = (cols: number) => ({ t: a, offset: 0, rowStride: cols, colStride: 1 });
  const colMajor = (rows: number) => ({ t: a, offset: 0, rowStride: 1, colStride: rows });
  const problem = (M: number, K: number, N: number, aT = false, bT = false) => ({
    M,
    N,
    K,
    batches: 1,
    a: aT ? colMajor(M) : rowMajor(K),
    aBatchStride: 0,
    b: bT ? colMajor(K) : rowMajor(N),
    bBatchStride: 0,
  });
  const big = Math.ceil(Math.cbrt(TEXTURE_MATMUL.minWork)); // not a multiple of 64: two packs
  assert.equal(textureLayout(problem(big, big, big), true)?.packs ?? null, cpu ? 2 : null);
  assert.equal(textureLayout(problem(big, big, big), false), null, "a tile override keeps storage");
  assert.equal(textureLayout(problem(64, 64, 64), true), null, "small products keep storage");
  // Copied operands (rows of 64-float multiples, as they lie) need less work: x·Wᵀ reads W
  // as Bᵀ, dW = dCᵀ·X reads dC as Aᵀ.
  const copied = [[problem(128, 128, 128), false, false], [
    problem(128, 128, 64, false, true),
    false,
    true,
  ], [
    problem(64, 128, 128, true, false),
    true,
    false,
  ]] as const;
  for (const [p, aT, bT] of copied) {
    const layout = textureLayout(p, true);
    assert.equal(layout !== null, cpu);
    if (layout) assert.deepEqual([layout.aT, layout.bT, layout.packs], [aT, bT, 0]);
  }
  for (const t of [a, b]) t.dispose();
});

Deno.test("texture gram (Newton–Schulz) = the storage gram kernel, upper tiles mirrored", async () => {
  // Multiples of 4: bit for bit with the vec4 gram kernel (same fma chain, same epilogue).
  for (const [nb, R, K] of [[2, 20, 12], [3, 36, 36]] as const) {
    const x = consts([nb, R, K], 11);
    const d = consts([nb, R, R], 12);
    const sym = gram(x); // symmetric d for the epilogue
    const r = await bothPaths(() => [
      gram(x),
      gram(x, { alpha: 0.5, d: sym, beta: -2, gamma: 3 }),
      gram(sym, { alpha: 2, d: sym, beta: 1, gamma: -1, symmetricInput: true }),
    ]);
    assert.deepEqual(r.textures, r.storage, `[${nb}, ${R}, ${K}]`);
    for (const t of [x, d, sym]) t.dispose();
  }
  // Other sizes: against float64 (the storage path's scalar kernel sums in another shape).
  const [nb, R, K] = [2, 7, 9];
  const x = consts([nb, R, K], 13);
  const previous = setMatmulTextures(true);
  const got = await gram(x, { alpha: 2, gamma: 1 }).data();
  setMatmulTextures(previous);
  const xv = await x.data();
  for (let b = 0; b < nb; b++) {
    for (let i = 0; i < R; i++) {
      for (let j = 0; j < R; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += xv[b * R * K + i * K + k] * xv[b * R * K + j * K + k];
        const want = 2 * s + (i === j ? 1 : 0);
        assert.ok(Math.abs(got[b * R * R + i * R + j] - want) < 1e-5, `(${b}, ${i}, ${j})`);
      }
    }
  }
  x.dispose();
});

Deno.test("texture matmul: a batched product (Newton–Schulz's P·X), broadcast operand too", async () => {
  const p = consts([3, 16, 16], 14), x = consts([3, 16, 24], 15), w = consts([24, 8], 16);
  const r = await bothPaths(() => [p.matmul(x), x.matmul(w)]);
  assert.deepEqual(r.textures, r.storage);
  for (const t of [p, x, w]) t.dispose();
});

Deno.test("texture matmul: copied operands ignore what pooled textures held before (NaN)", async () => {
  // K and N multiples of 64 take the copy path; M = 70 leaves stale padding rows in A's
  // texture, which an earlier product filled with NaN.
  const [M, K, N] = [70, 64, 128];
  const previous = setMatmulTextures(true);
  try {
    const nanA = mg.full([80, K], NaN), nanB = mg.full([K, N], NaN);
    await nanA.matmul(nanB).data(); // fills both pooled textures with NaN
    const a = consts([M, K], 17), b = consts([K, N], 18);
    const got = await a.matmul(b).data();
    setMatmulTextures(false);
    const want = await a.matmul(b).data();
    assert.deepEqual(bits(got), bits(want));
    for (const t of [nanA, nanB, a, b]) t.dispose();
  } finally {
    setMatmulTextures(previous);
  }
});

/** A Linear layer's three products and a grouped (MoE) layer's, through autograd. */
async function layerGrads(on: boolean, pooledNaN: boolean) {
  const previous = setMatmulTextures(on);
  try {
    if (pooledNaN) {
      // Fill pooled textures of the shapes below with NaN: padding must never reach a sum.
      const n = mg.full([160, 128], NaN);
      await n.matmul(n.transpose()).data();
      await mg.full([70, 64], NaN).transpose().matmul(n.slice(0, 0, 70)).data();
      n.dispose();
    }
    const x = consts([70, 128], 19).requiresGrad_();
    const w = consts([50, 128], 20).requiresGrad_(); // [out, in]: x·wᵀ reads w as Bᵀ
    const y = x.matmul(w.transpose()); // [70, 50]
    const a = consts([70, 128], 21).requiresGrad_();
    const we = consts([3, 64, 128], 22).requiresGrad_(); // experts [E, out, in]
    const offsets = mg.tensor(new Int32Array([0, 29, 29, 70]), { shape: [4], dtype: "i32" });
    const z = groupedMatmul(a, we, offsets); // [70, 64]; expert 1 owns no rows
    const loss = y.mul(consts([70, 50], 23)).sum().add(z.mul(consts([70, 64], 24)).sum());
    loss.backward();
    const out = await Promise.all(
      [y, z, x.grad!, w.grad!, a.grad!, we.grad!].map(async (t) => bits(await t.data())),
    );
    for (const t of [x, w, y, a, we, offsets, z, loss]) t.dispose();
    return out;
  } finally {
    setMatmulTextures(previous);
  }
}

Deno.test("texture matmul: Linear (x·Wᵀ, dX, dW) and grouped MoE products = storage, bit for bit", async () => {
  const storage = await layerGrads(false, false);
  const textures = await layerGrads(true, true);
  const names = ["y", "z", "dx", "dW", "da", "dW experts"];
  textures.forEach((t, i) => assert.deepEqual(t, storage[i], names[i]));
  // Operands stored as they lie are copies: no pack launch for any of these products.
  const previous = setMatmulTextures(true);
  try {
    const x = consts([70, 128], 25).requiresGrad_(), w = consts([64, 128], 26).requiresGrad_();
    const counts = countDispatches(() => {
      const y = x.matmul(w.transpose());
      y.sum().backward();
      y.dispose();
    });
    assert.equal(counts.get("matmul_pack") ?? 0, 0, JSON.stringify([...counts]));
    assert.equal(counts.get("matmul_texture"), 3, JSON.stringify([...counts]));
    // The grouped forward (rows, experts' W as Bᵀ), dA (rows) and dW (inner).
    const a = consts([70, 128], 27).requiresGrad_(), we = consts([3, 64, 128], 28).requiresGrad_();
    const offsets = mg.tensor(new Int32Array([0, 10, 40, 70]), { shape: [4], dtype: "i32" });
    const grouped = countDispatches(() => {
      const z = groupedMatmul(a, we, offsets);
      z.sum().backward();
      z.dispose();
    });
    assert.equal(grouped.get("matmul_pack") ?? 0, 0, JSON.stringify([...grouped]));
    assert.equal(grouped.get("matmul_texture_rows"), 2, JSON.stringify([...grouped]));
    assert.equal(grouped.get("matmul_texture_inner"), 1, JSON.stringify([...grouped]));
    for (const t of [x, w, a, we, offsets]) t.dispose();
    // Let the recorded work finish: Dawn aborts a process that exits with work in flight.
    await mg.sync();
  } finally {
    setMatmulTextures(previous);
  }
});

Deno.test("texture matmul: operands read as read-only storage textures or sampled = storage, bit for bit", async () => {
  // Each adapter has its default (TEXTURE_MATMUL.storageReads); both kinds must compile on
  // naga and Tint and give the storage kernels' bits: packed and copied operands, Aᵀ and Bᵀ
  // layouts, grouped rows and inner, a gram and a batched product with a broadcast operand.
  assert.equal(
    textureReads(),
    TEXTURE_MATMUL.storageReads.test(mg.deviceInfo().description) ? "storage" : "sampled",
  );
  const storage = await layerGrads(false, false);
  const p = consts([33, 20], 35), q = consts([20, 17], 36), g = consts([2, 40, 24], 37);
  const products =
    () => [p.matmul(q), gram(g, { alpha: 0.5, beta: 0, gamma: 1 }), g.matmul(p.slice(0, 0, 24))];
  const want = await bothPaths(products);
  for (const reads of ["storage", "sampled"] as const) {
    const previous = setTextureReads(reads);
    try {
      assert.equal(textureReads(), reads);
      const got = await layerGrads(true, true);
      got.forEach((t, i) => assert.deepEqual(t, storage[i], `${reads}: layer output ${i}`));
      const r = await bothPaths(products);
      r.textures.forEach((t, i) => assert.deepEqual(t, want.storage[i], `${reads}: product ${i}`));
    } finally {
      setTextureReads(previous);
    }
  }
  for (const t of [p, q, g]) t.dispose();
});

Deno.test("texture matmul: large products take the larger tile, still bit for bit", async () => {
  // On lavapipe matrices of ≥ 2²⁰ outputs take TEXTURE_MATMUL.tiles[0] (1000 × 1028 does not,
  // nor 16 batches of 512 × 512; other adapters keep the last tile); the edges (1032 = 32·32 +
  // 8, 1028 = 32·32 + 4) leave partial tiles. Each orientation's layout takes it (packs: A·B,
  // Bᵀ copied: x·Wᵀ, Aᵀ copied: dCᵀ·X); A·B, x·Wᵀ and a gram run, as each large-tile variant
  // takes lavapipe seconds to compile.
  const [large, small] = [TEXTURE_MATMUL.tiles[0], TEXTURE_MATMUL.tiles.at(-1)!];
  const lavapipe = /llvmpipe/i.test(mg.deviceInfo().description);
  const a = consts([1032, 13], 27), b = consts([13, 1028], 28);
  const x = consts([1032, 64], 29), w = consts([1028, 64], 30); // x·wᵀ: w is Bᵀ as it lies
  const dc = consts([16, 1028], 31), xs = consts([16, 1032], 32); // dcᵀ·xs: dc is Aᵀ
  const g = consts([1, 1032, 12], 34);
  const products: [string, mg.Tensor, mg.Tensor][] = [["A·B", a, b], ["x·Wᵀ", x, w.transpose()], [
    "dCᵀ·X",
    dc.transpose(),
    xs,
  ]];
  const previous = setMatmulTextures(true); // the tile depends on the outputs only
  try {
    for (const [name, l, r] of [...products, ["small", a.slice(0, 0, 1000), b] as const]) {
      const layout = layoutOf(l, r);
      const tile = name === "small" || !lavapipe ? small : large;
      assert.deepEqual([layout?.tile.tm, layout?.tile.tn4], [tile.tm, tile.tn4], name);
    }
    const batched = textureLayout({
      M: 512,
      N: 512,
      K: 13,
      batches: 16,
      a: { t: a, offset: 0, rowStride: 13, colStride: 1 },
      aBatchStride: 0,
      b: { t: b, offset: 0, rowStride: 1028, colStride: 1 },
      bBatchStride: 0,
    }, true);
    assert.deepEqual([batched?.tile.tm, batched?.tile.tn4], [small.tm, small.tn4], "batched");
    assert.deepEqual(textureTile(2 ** 20, true), { tm: small.tm, tn4: small.tn4 }, "grouped");
  } finally {
    setMatmulTextures(previous);
  }
  const r = await bothPaths(
    () => [a.matmul(b), x.matmul(w.transpose()), gram(g, { alpha: 0.5, gamma: 2 })],
  );
  ["A·B", "x·Wᵀ", "gram"].forEach((name, i) => assert.deepEqual(r.textures[i], r.storage[i], name));
  const want = ref(await a.data(), await b.data(), 1032, 13, 1028);
  const got = new Float32Array(new Uint32Array(r.textures[0]).buffer);
  for (let i = 0; i < want.length; i += 97) assert.ok(Math.abs(got[i] - want[i]) < 1e-5, `${i}`);
  for (const t of [a, b, x, w, dc, xs, g]) t.dispose();
});

Deno.test("texture pool: storage usage only for pack targets, or for operands read as storage", async () => {
  // The pool keeps the two usages apart: a texture without storage usage is never handed to
  // matmul_pack, nor bound as a read-only storage texture.
  const w = acquireTexture(16, 3, true);
  releaseTexture(w);
  const r = acquireTexture(16, 3, false);
  assert.equal(r.storage, false);
  assert.notEqual(r.id, w.id);
  const w2 = acquireTexture(16, 3, true);
  assert.equal(w2.id, w.id);
  releaseTexture(r);
  releaseTexture(w2);
  // A·B copies A (rows of 64 floats) and packs B (rows of 13); Bᵀ·Aᵀ packs bᵀ (read as it
  // lies: rows of 13) and copies aᵀ. With sampled reads both usages are bound in both slots;
  // with storage reads every operand texture has storage usage. Values exact either way.
  const a = consts([40, 64], 41), b = consts([64, 13], 42);
  const previous = setMatmulTextures(true);
  try {
    for (const [l, r] of [[a, b], [b.transpose(), a.transpose()]]) {
      const layout = layoutOf(l, r);
      assert.equal(layout?.packs, 1, "one operand packed, one copied");
    }
  } finally {
    setMatmulTextures(previous);
  }
  const want = ref(await a.data(), await b.data(), 40, 64, 13);
  for (const reads of ["sampled", "storage"] as const) {
    const before = setTextureReads(reads);
    try {
      const r1 = await bothPaths(() => [a.matmul(b), b.transpose().matmul(a.transpose())]);
      assert.deepEqual(r1.textures, r1.storage, reads);
      const got = new Float32Array(new Uint32Array(r1.textures[0]).buffer);
      want.forEach((v, i) => assert.ok(Math.abs(got[i] - v) < 1e-4, `${reads} ${i}`));
    } finally {
      setTextureReads(before);
    }
  }
  a.dispose();
  b.dispose();
});
