import * as mg from "../mod.ts";
import { arbBroadcastPair, arbValues, assertTensorClose, check, fc, gpu } from "./util.ts";
import { nd, zip } from "./reference/ndarray.ts";

Deno.test("add broadcasts like NumPy (f32, rtol 1e-6)", async () => {
  await gpu();
  await check(
    arbBroadcastPair().chain(([sa, sb]) =>
      fc.tuple(
        fc.constant(sa),
        fc.constant(sb),
        arbValues(sa.reduce((a, b) => a * b, 1)),
        arbValues(sb.reduce((a, b) => a * b, 1)),
      )
    ),
    async ([sa, sb, va, vb]) => {
      const a = mg.tensor(new Float32Array(va), { shape: sa });
      const b = mg.tensor(new Float32Array(vb), { shape: sb });
      const out = a.add(b);
      await assertTensorClose(out, zip([nd(va, sa), nd(vb, sb)], (x, y) => x + y), {
        rtol: 1e-6,
        atol: 1e-6,
      }, `add ${sa} ${sb}`);
      for (const t of [a, b, out]) t.dispose();
    },
    10,
  );
});
