/**
 * cli/profile.ts: the per-phase, per-family dispatch counts of one profiled training step add
 * up to `runtimeStats()`'s dispatch count over the same step, with the timestamp method (when
 * the device has "timestamp-query") and with the CPU-side method; profiled passes still give
 * the same loss as unprofiled ones (the profiler only observes).
 */
import assert from "node:assert/strict";
import * as mg from "../mod.ts";
import {
  formatProfile,
  opFamily,
  PHASES,
  profileStep,
  type StepProfile,
  tinyStep,
} from "../cli/profile.ts";
import { microConfig } from "./util.ts";

await mg.init();

function totals(p: StepProfile): { all: number; perPhase: number[] } {
  const perPhase = PHASES.map((ph) =>
    [...p.families[ph].values()].reduce((a, c) => a + c.dispatches, 0)
  );
  return { all: perPhase.reduce((a, b) => a + b, 0), perPhase };
}

for (const timestamps of [true, false]) {
  Deno.test(`profile (${timestamps ? "timestamps if available" : "CPU-side"}): dispatch totals equal runtimeStats()`, async () => {
    const s = tinyStep(microConfig(), "muonclip", 2, 8);
    const p = await profileStep(s, { warmup: 1, timestamps });
    const { all, perPhase } = totals(p);
    assert.equal(all, p.dispatches);
    assert.equal(all, p.runtimeDispatches, "profile total vs runtimeStats().dispatches");
    assert.ok(perPhase.every((n) => n > 0), `a phase recorded nothing: ${perPhase}`);
    const device = mg.deviceInfo();
    const timed = timestamps && device.features.includes("timestamp-query");
    for (const ph of PHASES) {
      assert.ok(p.wallMs[ph] > 0);
      for (const [fam, c] of p.families[ph]) {
        assert.ok(c.cpuMs >= 0, `${ph} ${fam}: CPU time ${c.cpuMs}`);
        if (timed) assert.ok(c.gpuMs !== null && c.gpuMs >= 0, `${ph} ${fam}: GPU ${c.gpuMs}`);
        else assert.equal(c.gpuMs, null);
      }
    }
    assert.equal(p.untimed, 0);
    // One record per dispatch, in phase order; per phase and kernel they sum to the families.
    assert.equal(p.launches.length, all);
    const order = p.launches.map((l) => PHASES.indexOf(l.phase));
    assert.ok(order.every((o, i) => i === 0 || o >= order[i - 1]), "records in phase order");
    for (const ph of PHASES) {
      for (const [fam, c] of p.families[ph]) {
        const mine = p.launches.filter((l) => l.phase === ph && opFamily(l.kernel) === fam);
        assert.equal(mine.length, c.dispatches, `${ph} ${fam}: records`);
        if (timed) {
          const sum = mine.reduce((a, l) => a + (l.gpuMs ?? 0), 0);
          assert.ok(
            Math.abs(sum - c.gpuMs!) <= 1e-6 * Math.max(1, c.gpuMs!),
            `${ph} ${fam}: GPU ms`,
          );
        } else assert.ok(mine.every((l) => l.gpuMs === null));
      }
    }
    assert.ok(p.launches.every((l) => /^\d+×\d+×\d+$/.test(l.grid)), "grids");
    const table = formatProfile(p, 5);
    assert.match(table, /\*\*the 5 slowest dispatches\*\*/);
    assert.equal(
      table.split("\n").filter((l) => /^\| \d+ \| (forward|backward|optimizer) \|/.test(l)).length,
      5,
    );
    s.model.dispose();
  });
}

Deno.test("profile: a profiled step computes what an unprofiled one does", async () => {
  const losses: number[] = [];
  for (const profiled of [false, true]) {
    const s = tinyStep(microConfig(), "muonclip", 2, 8);
    if (profiled) await profileStep(s, { warmup: 1 });
    else {
      for (let i = 0; i < 2; i++) {
        const stats = new mg.nn.StepStats();
        const loss = s.model.loss(s.x, s.y, { stats });
        loss.backward();
        await s.opt.step(stats);
        stats.dispose();
        loss.dispose();
        s.model.zeroGrad();
      }
    }
    const l = mg.noGrad(() => s.model.loss(s.x, s.y));
    losses.push((await l.data())[0]);
    l.dispose();
    s.model.dispose();
  }
  assert.equal(losses[1], losses[0]);
});

Deno.test("profile: a co-launched pair counts in its kernels' family", () => {
  assert.equal(opFamily("matmul+matmul"), "matmul");
  assert.equal(opFamily("rms_norm_vec4+rms_norm_vec4"), "RMSNorm");
  assert.equal(
    opFamily("check_indices+gather"),
    "check_indices + MoE routing / dispatch / combine",
  );
});
