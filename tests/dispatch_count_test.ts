/**
 * Dispatch budget of one tiny-K2 training step (makeConfig("tiny"), batch 4 × 64, after one
 * warm-up step), per phase, counted with `runtimeStats().dispatches` (issue 14 item 1): the
 * optimizer phase of MuonClip and of AdamW each stay within a bound, and the whole step within
 * the target. The counts of every phase are printed, so a regression names its phase.
 *
 * The counts depend only on the model's structure and the code, not on the adapter or on
 * timing, so the bounds are exact numbers plus a small margin, not tolerances.
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import { tinyStep } from "../cli/profile.ts";
import { runtimeStats, setCoLaunch } from "../core/runtime.ts";
import { makeConfig } from "../nn/config.ts";
import { setMatmulTextures } from "../ops/matmul_texture.ts";

await mg.init();

/**
 * Optimizer-phase bounds: the measured counts plus a margin of a few dispatches. MuonClip
 * (68 measured; 1123 before batching): Muon momentum gathers in 8 multi-tensor launches and applies in
 * 7 (41 + 3 parameters, up to 6 / 8 per launch) + 2 batched Newton–Schulz calls of 22 + 6
 * multi-tensor AdamW launches (19 parameters, up to 4 per launch, contiguous and strided
 * gradients apart) + 4 QK-Clip (one per layer). AdamW (16; 99 before): 63 parameters in
 * multi-tensor launches of up to 4, strided (transposed) gradients read in place. Counts are
 * for wgpu on lavapipe (32 storage buffers per stage); fewer bindings (Dawn: 12) mean more
 * launches.
 */
const OPTIMIZER_BOUND = { muonclip: 72, adamw: 18 } as const;
/**
 * The same with under 16 storage buffers per stage (Dawn/SwiftShader has 12: 3 AdamW
 * parameters and 5 Muon gathers per launch).
 */
const OPTIMIZER_BOUND_12 = { muonclip: 76, adamw: 23 } as const;
const FULL = mg.deviceInfo().limits.maxStorageBuffersPerShaderStage >= 16;

/**
 * Whole-step bounds, launches with co-launching on (core/colaunch.ts). MuonClip: forward 84 +
 * backward 90 + optimizer 68 = 242 (1595 before this work, 296 before co-launching, 250 before
 * MLA's attention took k and v packed, ops/attention.ts `attentionPacked`). AdamW: 84 + 90 + 16
 * = 190 (571 before, 243 before co-launching, 198 before packed k/v). MuonClip's bound is the
 * current total plus 2 %; AdamW's is the target. With 12 storage buffers per stage
 * (Dawn) the optimizer needs a few more launches (OPTIMIZER_BOUND_12).
 */
const STEP_BOUND = { muonclip: 247, adamw: 200 } as const;
/** The targets. */
const TARGET = { muonclip: 400, adamw: 200 } as const;

type Phase = "forward" | "backward" | "optimizer";

async function countStep(kind: "muonclip" | "adamw"): Promise<Record<Phase, number>> {
  const s = tinyStep(makeConfig("tiny"), kind, 4, 64);
  const counts: Record<Phase, number> = { forward: 0, backward: 0, optimizer: 0 };
  // Launches as a GPU runs them: with co-launching, which CPU adapters leave off by default
  // (core/runtime.ts `setCoLaunch`), and without the CPU adapters' texture matmul, whose
  // operand packs add two launches per large product (ops/matmul_texture.ts).
  const coLaunch = setCoLaunch(true);
  const textures = setMatmulTextures(false);
  try {
    for (let i = 0; i < 2; i++) {
      const stats = new mg.nn.StepStats();
      let d = runtimeStats().dispatches;
      const lap = (p: Phase) => {
        const now = runtimeStats().dispatches;
        counts[p] = now - d;
        d = now;
      };
      const loss = s.model.loss(s.x, s.y, { stats });
      lap("forward");
      loss.backward();
      lap("backward");
      await s.opt.step(stats);
      lap("optimizer");
      await mg.sync();
      stats.dispose();
      loss.dispose();
      s.model.zeroGrad();
    }
  } finally {
    setCoLaunch(coLaunch);
    setMatmulTextures(textures);
    (s.opt as { dispose?: () => void }).dispose?.();
    s.model.dispose();
    s.x.dispose();
    s.y.dispose();
  }
  return counts;
}

/**
 * On Dawn/SwiftShader (12 storage buffers per stage) only the AdamW step is counted: compiling
 * the MuonClip step's co-launched and Newton–Schulz kernels there took 4 min 56 s of CI (stop
 * 19), and the merged kernels' Tint validity is tests/colaunch_test.ts's micro-K2 case. Its
 * Dawn count (72 optimizer launches, 254 in all) was measured and is in bench/RESULTS.md.
 */
const KINDS = FULL ? (["muonclip", "adamw"] as const) : (["adamw"] as const);

for (const kind of KINDS) {
  Deno.test(`dispatch count: one tiny-K2 ${kind} step (optimizer ≤ ${OPTIMIZER_BOUND[kind]}, step ≤ ${STEP_BOUND[kind]})`, async () => {
    const c = await countStep(kind);
    const total = c.forward + c.backward + c.optimizer;
    console.log(
      `${kind}: forward ${c.forward}, backward ${c.backward}, optimizer ${c.optimizer}, ` +
        `step ${total} dispatches`,
    );
    assert.ok(c.forward > 0 && c.backward > 0 && c.optimizer > 0, JSON.stringify(c));
    const bound = (FULL ? OPTIMIZER_BOUND : OPTIMIZER_BOUND_12)[kind];
    assert.ok(
      c.optimizer <= bound,
      `${kind} optimizer phase: ${c.optimizer} dispatches > ${bound}`,
    );
    const step = STEP_BOUND[kind] + (FULL ? 0 : OPTIMIZER_BOUND_12[kind] - OPTIMIZER_BOUND[kind]);
    assert.ok(total <= step, `${kind} step: ${total} dispatches > ${step}`);
    // The targets hold as the issue measured them: wgpu (32 storage buffers per stage).
    if (FULL) assert.ok(total <= TARGET[kind], `${kind} step: ${total} > target ${TARGET[kind]}`);
  });
}
