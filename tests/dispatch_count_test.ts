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
import { runtimeStats } from "../core/runtime.ts";
import { makeConfig } from "../nn/config.ts";

await mg.init();

/**
 * Optimizer-phase bounds: the measured counts plus a margin of a few dispatches. MuonClip
 * (90; 1123 before batching): Muon momentum gathers in 8 multi-tensor launches and applies in
 * 7 (41 + 3 parameters, up to 6 / 8 per launch) + 2 batched Newton–Schulz calls of 22 + 19
 * AdamW + 12 QK-Clip (3 per layer). AdamW (63; 99 before strided gradients): one fused
 * kernel per parameter.
 */
const OPTIMIZER_BOUND = { muonclip: 94, adamw: 66 } as const;

/**
 * Whole-step bounds. The targets are ≤ 400 (MuonClip) and ≤ 200 (AdamW); until the
 * forward/backward dispatch work lands they are set to the totals measured now (forward 152 +
 * backward 322 + optimizer 90 / 63), so a regression anywhere in the step fails here. Lower each to
 * its target (400, 200) once the step reaches it.
 */
const STEP_BOUND = { muonclip: 564, adamw: 537 } as const;

type Phase = "forward" | "backward" | "optimizer";

async function countStep(kind: "muonclip" | "adamw"): Promise<Record<Phase, number>> {
  const s = tinyStep(makeConfig("tiny"), kind, 4, 64);
  const counts: Record<Phase, number> = { forward: 0, backward: 0, optimizer: 0 };
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
    (s.opt as { dispose?: () => void }).dispose?.();
    s.model.dispose();
    s.x.dispose();
    s.y.dispose();
  }
  return counts;
}

for (const kind of ["muonclip", "adamw"] as const) {
  Deno.test(`dispatch count: one tiny-K2 ${kind} step (optimizer ≤ ${OPTIMIZER_BOUND[kind]}, step ≤ ${STEP_BOUND[kind]})`, async () => {
    const c = await countStep(kind);
    const total = c.forward + c.backward + c.optimizer;
    console.log(
      `${kind}: forward ${c.forward}, backward ${c.backward}, optimizer ${c.optimizer}, ` +
        `step ${total} dispatches`,
    );
    assert.ok(c.forward > 0 && c.backward > 0 && c.optimizer > 0, JSON.stringify(c));
    assert.ok(
      c.optimizer <= OPTIMIZER_BOUND[kind],
      `${kind} optimizer phase: ${c.optimizer} dispatches > ${OPTIMIZER_BOUND[kind]}`,
    );
    assert.ok(total <= STEP_BOUND[kind], `${kind} step: ${total} dispatches > ${STEP_BOUND[kind]}`);
  });
}
