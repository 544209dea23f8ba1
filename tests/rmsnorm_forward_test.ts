/**
 * The RMSNorm forward kernel's layouts (ops/rmsnorm.ts `forward`): vec4 rows (row length,
 * row stride and offsets multiples of 4) and the scalar fallback (odd lengths, unaligned
 * offsets, strided gains), row counts that do not fill the last workgroup (8 rows each), long
 * rows (many vec4 per lane) and one-element rows, against the float64 reference, in both
 * kernel layouts ("lanes": 8 invocations per row; "thread": one per row, CPU adapters' default
 * from 64 rows). The saved row rsqrt is checked through dx. Tolerance: ≤ 2,000 squares summed in f32 then rsqrt
 * (rtol 2e-5 + atol 2e-6, as in nn_layers_test.ts); f16 4e-3.
 */
import * as mg from "../mod.ts";
import * as nn from "../nn/mod.ts";
import { assertClose, countDispatches, gpu, seededValues } from "./util.ts";
import { nd } from "./reference/ndarray.ts";
import { rmsNormRef, rmsNormVjp } from "./reference/nn.ts";
import assert from "node:assert/strict";
import { type RmsNormForwardLayout, setRmsNormForwardLayout } from "../ops/rmsnorm.ts";
import { setCoLaunch } from "../core/runtime.ts";

const LAYOUTS: RmsNormForwardLayout[] = ["lanes", "thread"];

/** Runs `fn` with the forward layout forced to `layout`. */
async function withLayout(layout: RmsNormForwardLayout, fn: () => Promise<void>) {
  const previous = setRmsNormForwardLayout(layout);
  try {
    await fn();
  } finally {
    setRmsNormForwardLayout(previous);
  }
}

const NORM = { rtol: 2e-5, atol: 2e-6 };
const NORM_GRAD = { rtol: 2e-5, atol: 2e-5 };

/** A [rows, n] window at column `col0` of a [rows, width] buffer, as tensor and reference. */
function windowed(rows: number, width: number, n: number, col0: number, seed: number) {
  const v = seededValues(rows * width, seed, -3, 3);
  const base = mg.tensor(v, { shape: [rows, width], requiresGrad: true });
  const t = base.slice(1, col0, col0 + n);
  const r = nd(
    Array.from({ length: rows * n }, (_, i) => v[Math.floor(i / n) * width + col0 + (i % n)]),
    [rows, n],
  );
  return { base, t, r };
}

Deno.test("rmsNorm forward: vec4 and scalar layouts, partial workgroups, long and 1-wide rows", async () => {
  await gpu();
  const cases: [string, number, number, number, number][] = [
    // [what, rows, width, n, col0]
    ["vec4 dense, 8k+3 rows", 19, 64, 64, 0],
    ["vec4 window (row stride 48)", 13, 48, 40, 4],
    ["unaligned offset (scalar)", 9, 48, 40, 2],
    ["odd length (scalar)", 11, 37, 37, 0],
    ["long rows", 3, 2000, 2000, 0],
    ["one-element rows", 10, 1, 1, 0],
    ["one row", 1, 12, 12, 0],
    ["vec4, 8k+1 rows past a thread workgroup", 65, 128, 128, 0],
  ];
  for (
    const [layout, [what, rows, width, n, col0]] of LAYOUTS.flatMap((l) =>
      cases.map((c) => [l, c] as const)
    )
  ) {
    await withLayout(layout, async () => {
      const x = windowed(rows, width, n, col0, rows + n);
      const gv = seededValues(n, 7, 0.5, 1.5);
      const g = mg.tensor(gv, { requiresGrad: true });
      const y = nn.rmsNorm(x.t, g, 1e-5);
      assertClose(await y.data(), rmsNormRef(x.r, nd(gv, [n]), 1e-5), NORM, `${layout} ${what} y`);
      const dyv = seededValues(rows * n, 3, -1, 1);
      y.backward(mg.tensor(dyv, { shape: [rows, n] }));
      const ref = rmsNormVjp(x.r, nd(gv, [n]), 1e-5, nd(dyv, [rows, n]));
      const dx = await x.base.grad!.data();
      const got = Array.from(
        { length: rows * n },
        (_, i) => dx[Math.floor(i / n) * width + col0 + (i % n)],
      );
      assertClose(got, ref.dx, NORM_GRAD, `${layout} ${what} dx (uses the saved rsqrt)`);
      for (const t of [x.base, x.t, g, y]) t.dispose();
    });
  }
});

Deno.test("rmsNorm forward: a strided gain and f16 vec4 rows", async () => {
  for (const layout of LAYOUTS) await withLayout(layout, () => stridedGainAndF16(layout));
});

Deno.test("rmsNorm forward: CPU adapters take one thread per row from 64 rows", async () => {
  const info = await gpu();
  // Co-launching would record a pairable kernel later, merged, under a joint name.
  const coLaunch = setCoLaunch(false);
  try {
    const cases: [number, RmsNormForwardLayout][] = [
      [63, "lanes"],
      [64, info.isFallbackAdapter ? "thread" : "lanes"],
    ];
    for (const [rows, layout] of cases) {
      const x = mg.tensor(seededValues(rows * 16, 5, -1, 1), { shape: [rows, 16] });
      const g = mg.tensor(seededValues(16, 6, 0.5, 1.5));
      const counts = countDispatches(() => nn.rmsNorm(x, g, 1e-6).dispose());
      const name = layout === "thread" ? "rms_norm_vec4_thread" : "rms_norm_vec4";
      assert.deepEqual([...counts.keys()], [name], `${rows} rows`);
      x.dispose();
      g.dispose();
    }
    await mg.sync();
  } finally {
    setCoLaunch(coLaunch);
  }
});

async function stridedGainAndF16(layout: RmsNormForwardLayout) {
  const info = await gpu();
  const xv = seededValues(5 * 16, 2, -2, 2);
  const x = mg.tensor(xv, { shape: [5, 16] });
  const wide = mg.tensor(seededValues(32, 4, 0.5, 1.5));
  const g = wide.slice(0, 0, 32, 2); // column stride 2: the scalar path
  const gv = Array.from(await g.data());
  assertClose(
    await nn.rmsNorm(x, g, 1e-6).data(),
    rmsNormRef(nd(xv, [5, 16]), nd(gv, [16]), 1e-6),
    NORM,
    `${layout} strided gain`,
  );
  if (info.f16) {
    const y = nn.rmsNorm(x.cast("f16"), g.contiguous().cast("f16"), 1e-6);
    assertClose(await y.cast("f32").data(), rmsNormRef(nd(xv, [5, 16]), nd(gv, [16]), 1e-6), {
      rtol: 4e-3,
      atol: 4e-3,
    }, `${layout} f16`);
  }
}
