/**
 * The trainer's K2-story flags end to end, in subprocesses with tiny sizes: `--grad-accum`
 * (K micro-batches = one batch of K× the rows, weights to f32 tolerance, QK-Clip on the max
 * over every micro-batch), `--grad-clip` (the pre-clip norm logged; a threshold above the
 * norm changes nothing), `--init-from` (step-0 loss equals the source's final loss, starts at
 * step 0), a resume that extends `--steps` (first steps' metrics unchanged, the schedule
 * recomputed and said so), the model shape from `--config` / shape flags, and
 * `--qk-clip-alpha`, `--ns-coefficients`, `--ns-method` recorded and restored.
 */
import assert from "node:assert/strict";

import { loadSafetensors } from "../io/mod.ts";
import { toHfConfig } from "../nn/hf_config.ts";
import { assertClose, gpu, microConfig } from "./util.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TMP = await Deno.makeTempDir({ prefix: "moongrad-flags-" });
const TEXT = `${TMP}/text.txt`;
await Deno.writeTextFile(
  TEXT,
  Array.from({ length: 120 }, (_, i) => `line ${i}: the quick brown fox ${i % 7} jumps.`).join(
    "\n",
  ),
);
// A small model shape (flags) so that each run is a few seconds on a CPU adapter.
const SHAPE = ["--dim", "32", "--layers", "2", "--heads", "2", "--experts", "4"];
const SMALL = ["--data", TEXT, "--seq-len", "16", "--warmup", "1", ...SHAPE];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function train(args: string[]): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli/train.ts", ...args],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

function ok(r: Result): Result {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

// deno-lint-ignore no-explicit-any
type Rec = Record<string, any>;
async function metrics(dir: string): Promise<Rec[]> {
  return (await Deno.readTextFile(`${dir}/metrics.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
}

/** Asserts two checkpoints' weights agree within `tol`. */
async function assertSameWeights(a: string, b: string, tol: { rtol: number; atol: number }) {
  await gpu();
  const wa = await loadSafetensors(`${a}/checkpoint/model.safetensors`);
  const wb = await loadSafetensors(`${b}/checkpoint/model.safetensors`);
  try {
    assert.deepEqual([...wa.keys()].sort(), [...wb.keys()].sort());
    for (const [k, t] of wa) {
      assertClose(await wb.get(k)!.data(), await t.data(), tol, k);
    }
  } finally {
    for (const t of [...wa.values(), ...wb.values()]) t.dispose();
  }
}

/**
 * Under `test:dawn` these tests would only rerun their CLI subprocesses, which use Deno's own
 * WebGPU (not Dawn): they run once, in the wgpu suite.
 */
const ONLY_WGPU_SUITE = Deno.env.get("MOONGRAD_SUITE") === "dawn";
const opts = { sanitizeResources: false, sanitizeOps: false, ignore: ONLY_WGPU_SUITE };
const ONE = `${TMP}/one-batch`;

Deno.test({
  ...opts,
  name: "train --grad-accum 2: two micro-batches of 1 row equal one batch of 2 rows",
  fn: async () => {
    const two = `${TMP}/two-micro`;
    // τ below the initial logits: every step clips, from the max over both micro-batches.
    const common = [...SMALL, "--steps", "2", "--tau", "0.05", "--eval-every", "100"];
    ok(await train([...common, "--batch", "2", "--out", ONE]));
    const r = ok(await train([...common, "--batch", "1", "--grad-accum", "2", "--out", two]));
    assert.match(r.stdout, /2 micro-batches of 1×16 tokens/);
    const a = (await metrics(ONE)).filter((x) => x.loss !== undefined);
    const b = (await metrics(two)).filter((x) => x.loss !== undefined);
    assert.equal(b.length, 2);
    for (let i = 0; i < a.length; i++) {
      // The same rows: the first step's per-head max logits are exactly equal, so QK-Clip
      // clips the same heads by the same γ; the loss is the mean of the micro-batch means.
      if (i === 0) {
        assert.deepEqual(b[i].head_max_logit, a[i].head_max_logit, "step 1 max logits");
      } else {
        // Later steps start from weights equal to f32 rounding.
        assertClose(b[i].head_max_logit.flat(), a[i].head_max_logit.flat(), {
          rtol: 1e-4,
          atol: 1e-6,
        }, `step ${i + 1} max logits`);
      }
      assert.ok(a[i].clip_gamma.length > 0, "heads were clipped");
      assert.deepEqual(
        b[i].clip_gamma.map((g: Rec) => [g.layer, g.head]),
        a[i].clip_gamma.map((g: Rec) => [g.layer, g.head]),
      );
      assert.deepEqual(b[i].expert_load, a[i].expert_load);
      assert.equal(b[i].micro_batches, 2);
      assert.equal(b[i].tokens, a[i].tokens, "tokens per step count every micro-batch");
      assert.ok(Math.abs(b[i].loss - a[i].loss) < 1e-5, `loss ${b[i].loss} vs ${a[i].loss}`);
      // The summed gradient has the batch's scale (a missing 1/K would double it).
      assert.ok(
        Math.abs(b[i].grad_norm - a[i].grad_norm) < 1e-4 * a[i].grad_norm,
        `grad norm ${b[i].grad_norm} vs ${a[i].grad_norm}`,
      );
      assert.ok(Math.abs(b[i].update_norm - a[i].update_norm) < 1e-3 * a[i].update_norm);
    }
    await assertSameWeights(ONE, two, { rtol: 1e-4, atol: 2e-5 });
  },
});

Deno.test({
  ...opts,
  name: "train --grad-clip: pre-clip norm logged; above the norm nothing changes, below it does",
  fn: async () => {
    const common = [...SMALL, "--batch", "2", "--steps", "3", "--optimizer", "adamw"];
    const plain = `${TMP}/clip-none`, high = `${TMP}/clip-high`, low = `${TMP}/clip-low`;
    ok(await train([...common, "--out", plain]));
    const p = (await metrics(plain)).filter((x) => x.loss !== undefined);
    const maxNorm = Math.max(...p.map((x) => x.grad_norm));
    assert.ok(p.every((x) => x.grad_norm > 0 && x.update_norm > 0));
    ok(await train([...common, "--grad-clip", String(maxNorm * 2), "--out", high]));
    ok(await train([...common, "--grad-clip", String(p[0].grad_norm / 10), "--out", low]));
    const h = (await metrics(high)).filter((x) => x.loss !== undefined);
    const l = (await metrics(low)).filter((x) => x.loss !== undefined);
    // Above every step's norm: bit-identical to no clipping.
    assert.deepEqual(h.map((x) => [x.loss, x.grad_norm]), p.map((x) => [x.loss, x.grad_norm]));
    await assertSameWeights(plain, high, { rtol: 0, atol: 0 });
    // Below it: the first step's gradients (before clipping) are the same and logged as such,
    // and the clipped steps then train differently.
    assert.equal(l[0].grad_norm, p[0].grad_norm);
    assert.notEqual(l[2].loss, p[2].loss);
    const run = JSON.parse(await Deno.readTextFile(`${low}/run.json`));
    assert.equal(run.settings.gradClip, p[0].grad_norm / 10);
    const html = await Deno.readTextFile(`${low}/report.html`);
    assert.ok(html.includes("Gradient norm (global L2, before clipping), clipped to"));
  },
});

Deno.test({
  ...opts,
  name: "train --init-from: loads the weights (step-0 loss = the source's final loss), step 0",
  fn: async () => {
    const ft = `${TMP}/finetune`;
    const src = await metrics(ONE);
    const r = ok(
      await train([
        "--data",
        TEXT,
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--steps",
        "1",
        "--init-from",
        ONE,
        "--out",
        ft,
      ]),
    );
    assert.match(r.stdout, /weights from .*one-batch\/checkpoint/);
    const recs = await metrics(ft);
    assert.deepEqual(recs.map((x) => x.step), [0, 1]);
    const srcFinal = src.filter((x) => x.val_loss !== undefined).at(-1)!;
    assert.equal(srcFinal.step, 2);
    assert.ok(
      Math.abs(recs[0].val_loss - srcFinal.val_loss) < 1e-5,
      `${recs[0].val_loss} vs ${srcFinal.val_loss}`,
    );
    const run = JSON.parse(await Deno.readTextFile(`${ft}/run.json`));
    assert.match(run.initFrom, /one-batch\/checkpoint$/);
    assert.equal(run.config.hidden_size, 32, "the source's shape");
    // A fresh optimizer: a step count of 1, not 3.
    const state = JSON.parse(await Deno.readTextFile(`${ft}/checkpoint/trainer_state.json`));
    assert.equal(state.step, 1);
    // Shape flags conflict with the source's shape.
    const bad = await train([
      "--data",
      TEXT,
      "--init-from",
      ONE,
      "--dim",
      "64",
      "--out",
      `${TMP}/x`,
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--init-from takes the model shape from its config\.json/);
  },
});

Deno.test({
  ...opts,
  name: "train --resume --steps N: extends a finished run; earlier metrics unchanged",
  fn: async () => {
    const dir = `${TMP}/extend`;
    const common = [...SMALL, "--batch", "2", "--optimizer", "adamw", "--eval-every", "2"];
    ok(await train([...common, "--steps", "2", "--out", dir]));
    const before = await metrics(dir);
    const r = ok(await train(["--resume", dir, "--steps", "4"]));
    assert.match(
      r.stdout,
      /extending the run from 2 to 4 steps: the cosine learning-rate schedule is recomputed for 4 steps/,
    );
    assert.match(r.stdout, /done: 4\/4 steps/);
    const after = await metrics(dir);
    assert.deepEqual(after.map((x) => x.step), [0, 1, 2, 3, 4]);
    assert.deepEqual(after.slice(0, before.length), before, "the first steps' records");
    const run = JSON.parse(await Deno.readTextFile(`${dir}/run.json`));
    assert.equal(run.settings.steps, 4);
    // Shrinking is refused; other settings are restored (the optimizer was not given again).
    const bad = await train(["--resume", dir, "--steps", "3"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--steps may only grow/);
    const state = JSON.parse(await Deno.readTextFile(`${dir}/checkpoint/trainer_state.json`));
    assert.equal(state.settings.optimizer, "adamw");
    assert.equal(state.settings.steps, 4);
  },
});

Deno.test({
  ...opts,
  name: "train --config FILE with --qk-clip-alpha, --ns-coefficients, --ns-method",
  fn: async () => {
    const cfgPath = `${TMP}/config.json`;
    const hf = toHfConfig(microConfig({ vocab_size: 256, qk_nope_head_dim: 12 }));
    await Deno.writeTextFile(cfgPath, JSON.stringify(hf));
    const dir = `${TMP}/config-run`;
    ok(
      await train([
        "--data",
        TEXT,
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--steps",
        "1",
        "--config",
        cfgPath,
        "--qk-clip-alpha",
        "0.25",
        "--ns-coefficients",
        "polar-express",
        "--ns-method",
        "gram",
        "--out",
        dir,
      ]),
    );
    const run = JSON.parse(await Deno.readTextFile(`${dir}/run.json`));
    assert.equal(run.config.hidden_size, 24);
    assert.equal(run.config.qk_nope_head_dim, 12);
    assert.equal(run.settings.qkClipAlpha, 0.25);
    assert.equal(run.settings.nsCoefficients, "polar-express");
    assert.equal(run.settings.nsMethod, "gram");
    assert.deepEqual(run.command.slice(-2), ["--out", dir]);
    const [rec] = (await metrics(dir)).filter((x) => x.loss !== undefined);
    assert.equal(rec.head_max_logit.length, 2);
    assert.equal(rec.head_max_logit[0].length, 2);
    assert.ok(Number.isFinite(rec.loss));
    // Resuming with a different α is refused.
    const bad = await train(["--resume", dir, "--steps", "2", "--qk-clip-alpha", "0.5"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--qk-clip-alpha 0.25, not 0.5/);
  },
});

Deno.test({
  ...opts,
  name: "train: flag errors for the new flags",
  fn: async () => {
    for (
      const [args, re] of [
        [["--grad-accum", "0"], /--grad-accum/],
        [["--grad-clip", "-1"], /--grad-clip must be > 0/],
        [["--qk-clip-alpha", "2"], /--qk-clip-alpha must be <= 1/],
        [["--ns-coefficients", "cubic"], /--ns-coefficients/],
        [["--ns-method", "fast"], /--ns-method/],
        [["--config", `${TMP}/missing.json`], /--config .*missing\.json/],
        [["--qk-rope-dim", "3"], /model shape is not valid.*qk_rope_head_dim/s],
      ] as [string[], RegExp][]
    ) {
      const r = await train(["--data", TEXT, ...args, "--out", `${TMP}/never`]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(" "));
    }
  },
});

Deno.test({
  ...opts,
  ignore: false,
  name: "cleanup",
  fn: () => Deno.remove(TMP, { recursive: true }),
});
