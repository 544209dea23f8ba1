/**
 * `addmm(c, a, b)` = c + a·b with c added in the matmul epilogue: bit-identical to
 * `add(c, matmul(a, b))` forward and backward, in one dispatch when fused, on the adapter's
 * default tiles and on the shared-memory (GPU) and skinny configurations; the unfused fallback
 * (a strided or broadcast c, c stored with a, 1-D operands) gives the same values.
 */
import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import * as mg from "../mod.ts";
import { setCoLaunch } from "../core/runtime.ts";
import { countDispatches, gpu, seededValues } from "./util.ts";
import { setMatmulPairing } from "../ops/matmul.ts";
import { groupedMatmul } from "../ops/moe.ts";

const rand = (shape: readonly number[], seed: number) =>
  mg.tensor(seededValues(shape.reduce((x, y) => x * y, 1), seed), { shape: [...shape] });

/** Forward values and all three gradients of addmm and of the unfused composition. */
async function both(cs: number[], as: number[], bs: number[], view?: (c: mg.Tensor) => mg.Tensor) {
  const [c0, a0, b0] = [rand(cs, 1), rand(as, 2), rand(bs, 3)];
  const run = async (fused: boolean) => {
    const [c, a, b] = [c0, a0, b0].map((t) => t.detach().requiresGrad_());
    const cv = view ? view(c) : c;
    let y: mg.Tensor | null = null;
    const counts = countDispatches(() => {
      y = fused ? mg.addmm(cv, a, b) : mg.add(cv, mg.matmul(a, b));
    });
    const up = rand(y!.shape, 4);
    y!.mul(up).sum().backward();
    const out = {
      y: await y!.data(),
      grads: await Promise.all([c, a, b].map((t) => t.grad!.data())),
      dispatches: [...counts.values()].reduce((s, x) => s + x, 0),
    };
    for (const t of [c, a, b, y!, up]) t.dispose();
    return out;
  };
  const f = await run(true);
  const e = await run(false);
  for (const t of [c0, a0, b0]) t.dispose();
  return { f, e };
}

Deno.test("addmm = add(c, matmul(a, b)) bit for bit, forward and backward, one dispatch", async () => {
  await gpu();
  const configs: (mg.MatmulConfig | null)[] = [
    null,
    { wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16, shared: true, vec4: true },
  ];
  for (const config of configs) {
    const previous = mg.setMatmulConfig(config);
    try {
      for (
        const [cs, as, bs] of [
          [[33, 20], [33, 17], [17, 20]],
          [[2, 12, 8], [2, 12, 16], [16, 8]], // a Linear on [B, T, in] plus a residual
          [[3, 5, 6], [3, 5, 7], [3, 7, 6]],
          [[2, 40], [2, 64], [64, 40]], // skinny: M ≤ 4
        ]
      ) {
        const { f, e } = await both(cs, as, bs);
        const what = `${JSON.stringify([cs, as, bs])} config ${JSON.stringify(config)}`;
        deepStrictEqual(f.y, e.y, what);
        f.grads.forEach((g, i) => deepStrictEqual(g, e.grads[i], `${what} grad ${i}`));
        strictEqual(f.dispatches, 1, what);
        strictEqual(e.dispatches, 2, what);
      }
    } finally {
      mg.setMatmulConfig(previous);
    }
  }
});

Deno.test("addmm falls back to the unfused sum: strided or broadcast c, c stored with a, 1-D operands", async () => {
  await gpu();
  // c transposed (not contiguous) and c broadcast over rows: same values as the add.
  for (const view of [(c: mg.Tensor) => c.transpose(0, 1), (c: mg.Tensor) => c.slice(0, 0, 1)]) {
    const { f, e } = await both([6, 6], [6, 5], [5, 6], view);
    deepStrictEqual(f.y, e.y);
    f.grads.forEach((g, i) => deepStrictEqual(g, e.grads[i]));
  }
  const x = rand([4, 4], 7);
  const viaAdd = mg.add(x, mg.matmul(x, x));
  deepStrictEqual(await mg.addmm(x, x, x).data(), await viaAdd.data()); // c is a: unfused
  const v = rand([4], 8);
  deepStrictEqual(
    await mg.addmm(v, x, v).data(),
    await mg.add(v, mg.matmul(x, v)).data(),
  );
  throws(() => mg.addmm(null as unknown as mg.Tensor, x, x), /addmm.*c must be a Tensor/);
  throws(() => mg.addmm(x, x, rand([3, 4], 9)), /matmul.*inner dimensions/);
  for (const t of [x, viaAdd, v]) t.dispose();
});

Deno.test("a matmul's two gradients in one paired launch = two launches, bit for bit", async () => {
  await gpu();
  const configs: (mg.MatmulConfig | null)[] = [
    null,
    { wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16, shared: true, vec4: true },
  ];
  for (const config of configs) {
    const previousConfig = mg.setMatmulConfig(config);
    try {
      // A Linear ([B, T, in] @ Wᵀ: dW folds the batch into k), a batched product, a leaf used
      // twice (dA with a prior) and an addmm: paired. A 3-wide output gives dW the skinny
      // tiles (another workgroup size): two launches, as before.
      for (
        const [as, bs, twice, pairs] of [
          [[2, 12, 16], [16, 8], false, true],
          [[3, 5, 7], [3, 7, 6], false, true],
          [[2, 12, 16], [16, 8], true, true],
          [[40, 24], [24, 3], false, false],
        ] as const
      ) {
        const grads = async (paired: boolean) => {
          // Co-launching (core/colaunch.ts) would merge the two unpaired launches too.
          const previous = setMatmulPairing(paired);
          const coLaunch = setCoLaunch(false);
          try {
            const a = rand(as, 11).requiresGrad_();
            const b = rand(bs, 12).transpose(-1, -2).contiguous().transpose(-1, -2)
              .detach().requiresGrad_();
            let y = a.matmul(b);
            if (twice) y = y.add(mg.addmm(y.detach(), a, b));
            const up = rand(y.shape, 13);
            let n = 0;
            const counts = countDispatches(() => y.mul(up).sum().backward());
            for (const [k, c] of counts) if (k.startsWith("matmul")) n += c;
            const out = { ga: await a.grad!.data(), gb: await b.grad!.data(), n };
            for (const t of [a, b, y, up]) t.dispose();
            return out;
          } finally {
            setMatmulPairing(previous);
            setCoLaunch(coLaunch);
          }
        };
        const one = await grads(true);
        const two = await grads(false);
        const what = `${JSON.stringify([as, bs, twice])} ${JSON.stringify(config)}`;
        deepStrictEqual(one.ga, two.ga, what);
        deepStrictEqual(one.gb, two.gb, what);
        strictEqual(one.n, pairs ? two.n / 2 : two.n, `${what}: ${one.n} vs ${two.n} launches`);
      }
    } finally {
      mg.setMatmulConfig(previousConfig);
    }
  }
});

Deno.test("a grouped (MoE) product's two gradients in one paired launch = two launches, bit for bit", async () => {
  await gpu();
  // 3 experts over 10 rows (groups of 4, 0 and 6 rows); a used twice (dA with a prior).
  const offsets = mg.tensor([0, 4, 4, 10], { dtype: "i32" });
  const grads = async (paired: boolean) => {
    const previous = setMatmulPairing(paired);
    const coLaunch = setCoLaunch(false);
    try {
      const a = rand([10, 12], 21).requiresGrad_();
      const w = rand([3, 8, 12], 22).requiresGrad_();
      const y = groupedMatmul(a, w, offsets).add(a.matmul(rand([12, 8], 23)));
      const up = rand(y.shape, 24);
      let n = 0;
      const counts = countDispatches(() => y.mul(up).sum().backward());
      for (const [k, c] of counts) if (k.startsWith("matmul")) n += c;
      const out = { ga: await a.grad!.data(), gw: await w.grad!.data(), n };
      for (const t of [a, w, y, up]) t.dispose();
      return out;
    } finally {
      setMatmulPairing(previous);
      setCoLaunch(coLaunch);
    }
  };
  for (const config of [null, { ...mg.matmulConfig(), shared: true, vec4: true, tm: 4, tn: 4 }]) {
    const previousConfig = mg.setMatmulConfig(config);
    try {
      const one = await grads(true);
      const two = await grads(false);
      const what = JSON.stringify(config);
      deepStrictEqual(one.ga, two.ga, what);
      deepStrictEqual(one.gw, two.gw, what);
      strictEqual(two.n - one.n, 1, `${what}: ${one.n} vs ${two.n} launches`);
    } finally {
      mg.setMatmulConfig(previousConfig);
    }
  }
  offsets.dispose();
});
