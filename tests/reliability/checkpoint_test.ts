/**
 * Checkpoints under kills and tampering, in subprocesses on the smallest run (3 steps of
 * 2 × 16 bytes, a checkpoint every step, validation every 2 steps on 1 batch), compared with
 * one uninterrupted run of the same settings:
 *   - a run SIGKILLed before its first checkpoint, right after one, and in the middle of
 *     writing one (when its `.checkpoint-tmp-*` directory appears), each time continued with
 *     `--resume DIR`, ends with the losses, validation losses, router loads and the model and
 *     optimizer files of the uninterrupted run, bit for bit;
 *   - `--resume` restores every setting (also --eval-every and --checkpoint-every), drops a
 *     torn last metrics line, removes stale `.checkpoint-tmp-*` directories, and a run stopped
 *     before its first checkpoint restarts in place (each with its own test);
 *   - a checkpoint whose step was edited, whose model or optimizer tensors have a flipped byte,
 *     whose files were truncated or whose trainer_state.json was changed is refused with one
 *     line and exit code 2, leaving the run directory byte-identical.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "../../cli/data.ts";
import { cli, copyDir, exists, killWhen, metrics, ok, snapshot, writeFixtureText } from "./cli.ts";

const TMP = await Deno.makeTempDir({ prefix: "moongrad-ckpt-" });
const TEXT = `${TMP}/text.txt`;
await writeFixtureText(TEXT);
const RUN = [
  ...["--data", TEXT, "--batch", "2", "--seq-len", "16", "--warmup", "1", "--eval-batches", "1"],
  ...["--steps", "3", "--eval-every", "2", "--checkpoint-every", "1"],
];
const REF = `${TMP}/ref`;
const KILLED = `${TMP}/killed`;
/** A run stopped with a checkpoint at step 1 (the tests resume copies of it). */
const STEP1 = `${TMP}/step1`;

/**
 * Under `test:dawn` these tests would only rerun their CLI subprocesses, which use Deno's own
 * WebGPU (not Dawn): they run once, in the wgpu suite.
 */
const ONLY_WGPU_SUITE = Deno.env.get("MOONGRAD_SUITE") === "dawn";
const opts = { sanitizeResources: false, sanitizeOps: false, ignore: ONLY_WGPU_SUITE };

async function fileSha(path: string): Promise<string> {
  return await sha256Hex(await Deno.readFile(path));
}

async function stateOf(dir: string): Promise<Record<string, unknown> & { step: number }> {
  return JSON.parse(await Deno.readTextFile(`${dir}/checkpoint/trainer_state.json`));
}

async function tmpDirs(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".checkpoint-tmp-")) out.push(e.name);
  }
  return out;
}

async function lastStep(dir: string): Promise<number> {
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
  const lines = text.split("\n").filter((l) => l.endsWith("}"));
  return JSON.parse(lines.at(-1)!).step;
}

Deno.test({
  name: "reliability: the uninterrupted reference run",
  ...opts,
  fn: async () => {
    ok(await cli("train", [...RUN, "--out", REF]));
    assert.deepEqual((await metrics(REF)).map((r) => r.step), [0, 1, 2, 3]);
    ok(await cli("train", [...RUN, "--stop-at", "1", "--out", STEP1]));
    assert.equal((await stateOf(STEP1)).step, 1);
  },
});

/** Asserts that `dir` ended with the metrics and the checkpoint files of the reference run. */
async function assertSameAsReference(dir: string): Promise<void> {
  const ref = await metrics(REF);
  const got = await metrics(dir);
  assert.deepEqual(got.map((r) => r.step), [0, 1, 2, 3]);
  for (let i = 0; i < ref.length; i++) {
    assert.equal(got[i].loss, ref[i].loss, `loss at step ${ref[i].step}`);
    assert.equal(got[i].val_loss, ref[i].val_loss, `val loss at step ${ref[i].step}`);
    assert.deepEqual(got[i].max_logit, ref[i].max_logit);
    assert.deepEqual(got[i].expert_load, ref[i].expert_load);
  }
  for (const f of ["model.safetensors", "optimizer.safetensors", "tokenizer.json"]) {
    assert.equal(
      await fileSha(`${dir}/checkpoint/${f}`),
      await fileSha(`${REF}/checkpoint/${f}`),
      `${f} differs from the uninterrupted run's`,
    );
  }
  assert.deepEqual((await stateOf(dir)).files, (await stateOf(REF)).files);
}

Deno.test({
  name: "reliability: --resume restores every setting (--eval-every, --checkpoint-every, ...)",
  ...opts,
  fn: async () => {
    const dir = `${TMP}/restored`;
    await copyDir(STEP1, dir);
    ok(await cli("train", ["--resume", dir]));
    // --eval-every 2 restored: a validation loss at step 2 (the default 8 would skip it).
    await assertSameAsReference(dir);
    const s = (await stateOf(dir)).settings as Record<string, unknown>;
    const ref = (await stateOf(REF)).settings as Record<string, unknown>;
    assert.deepEqual(s, ref, "the settings of the resumed run");
    assert.equal(s.checkpointEvery, 1);
    assert.equal(s.evalBatches, 1);
  },
});

Deno.test({
  name: "reliability: --resume drops a torn last metrics line and says so",
  ...opts,
  fn: async () => {
    const dir = `${TMP}/torn`;
    await copyDir(STEP1, dir);
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, '{"step":2,"loss":4.8', { append: true });
    const r = ok(await cli("train", ["--resume", dir, "--stop-at", "2"]));
    assert.match(r.stdout, /\nmetrics\.jsonl: dropped a partial last line[^\n]*\n/);
    assert.deepEqual((await metrics(dir)).map((x) => x.step), [0, 1, 2]);
  },
});

Deno.test({
  name: "reliability: --resume removes stale .checkpoint-tmp-* directories and says so",
  ...opts,
  fn: async () => {
    const dir = `${TMP}/stale`;
    await copyDir(STEP1, dir);
    await Deno.mkdir(`${dir}/.checkpoint-tmp-0badc0de`);
    await Deno.writeTextFile(`${dir}/.checkpoint-tmp-0badc0de/model.safetensors`, "partial");
    const r = ok(await cli("train", ["--resume", dir, "--stop-at", "2"]));
    assert.match(
      r.stdout,
      /removed 1 leftover\(s\) of an interrupted run: \.checkpoint-tmp-0badc0de/,
    );
    assert.ok(!(await exists(`${dir}/.checkpoint-tmp-0badc0de`)));
  },
});

Deno.test({
  name: "reliability: a run stopped before its first checkpoint restarts in place with --out",
  ...opts,
  fn: async () => {
    const dir = `${TMP}/no-checkpoint`;
    await Deno.mkdir(dir);
    await Deno.copyFile(`${REF}/run.json`, `${dir}/run.json`);
    const first = (await Deno.readTextFile(`${REF}/metrics.jsonl`)).split("\n")[0];
    await Deno.writeTextFile(`${dir}/metrics.jsonl`, first + "\n");
    const r = ok(await cli("train", [...RUN, "--stop-at", "1", "--out", dir]));
    assert.match(r.stdout, /stopped before its first checkpoint: starting it again from step 0/);
    assert.deepEqual((await metrics(dir)).map((x) => x.step), [0, 1]);
    assert.equal((await stateOf(dir)).step, 1);
  },
});

Deno.test({
  name: "reliability: SIGKILL before, after and during a checkpoint write, each time --resume: " +
    "bit-identical to the uninterrupted run",
  ...opts,
  fn: async (t) => {
    await t.step("killed before its first checkpoint: --resume starts it again", async () => {
      await killWhen("train", [...RUN, "--out", KILLED], () => exists(`${KILLED}/run.json`), "1");
      assert.ok(!(await exists(`${KILLED}/checkpoint`)), "killed after the first checkpoint");
      const r = await killWhen(
        "train",
        ["--resume", KILLED],
        () => exists(`${KILLED}/checkpoint/trainer_state.json`),
        "2",
      );
      assert.match(r.stdout, /stopped before its first checkpoint: starting it again from step 0/);
      assert.equal(r.stderr, "");
      assert.equal((await stateOf(KILLED)).step, 1, "killed right after the step-1 checkpoint");
    });

    await t.step("killed while writing the step-2 checkpoint", async () => {
      await killWhen(
        "train",
        ["--resume", KILLED],
        async () => (await tmpDirs(KILLED)).length > 0,
        "3",
      );
      // --checkpoint-every 1 and --eval-every 2 were restored: the step-2 checkpoint was being
      // written after step 2's metrics (with its validation loss).
      assert.equal(await lastStep(KILLED), 2);
      const tmp = await tmpDirs(KILLED);
      assert.equal(tmp.length, 1, "the kill landed after the checkpoint was swapped in");
      assert.equal((await stateOf(KILLED)).step, 1, "the step-1 checkpoint is still in place");
    });

    await t.step("resumed: the partial checkpoint is removed, the run completes", async () => {
      const r = ok(await cli("train", ["--resume", KILLED, "--checkpoint-every", "2"]));
      assert.match(r.stdout, /resuming .* at step 1/);
      assert.match(r.stdout, /settings changed on resume: --checkpoint-every 1 → 2\n/);
      assert.match(r.stdout, /removed 1 leftover\(s\) of an interrupted run: \.checkpoint-tmp-/);
      assert.deepEqual(await tmpDirs(KILLED), []);
      const s = (await stateOf(KILLED)).settings as Record<string, unknown>;
      assert.equal(s.evalEvery, 2, "restored");
      assert.equal(s.checkpointEvery, 2, "changed by the flag");
    });

    await t.step("bit-identical to the uninterrupted run", () => assertSameAsReference(KILLED));
  },
});

/** Flips one byte `back` bytes before the end of a file (inside its last tensor's data). */
async function flipByte(path: string, back = 100): Promise<void> {
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - back] ^= 0x01;
  await Deno.writeFile(path, bytes);
}

async function editState(dir: string, edit: (s: Record<string, unknown>) => void) {
  const path = `${dir}/checkpoint/trainer_state.json`;
  const s = JSON.parse(await Deno.readTextFile(path));
  edit(s);
  await Deno.writeTextFile(path, JSON.stringify(s, null, 1) + "\n");
}

Deno.test({
  name: "reliability: a tampered or corrupt checkpoint is one error line, exit 2, nothing touched",
  ...opts,
  fn: async () => {
    assert.equal((await stateOf(STEP1)).step, 1);
    const ck = (d: string) => `${d}/checkpoint`;
    const cases: [string, (d: string) => Promise<void>, RegExp, string[]?][] = [
      [
        "step edited 1 → 2",
        (d) => editState(d, (s) => s.step = 2),
        /trainer_state\.json says step 2, but model\.safetensors was saved at step 1/,
      ],
      [
        "a flipped byte in the model's tensor data",
        (d) => flipByte(`${ck(d)}/model.safetensors`),
        /model\.safetensors was changed or corrupted after it was saved: its SHA-256 is/,
      ],
      [
        "a flipped byte in the optimizer's tensor data",
        (d) => flipByte(`${ck(d)}/optimizer.safetensors`),
        /optimizer\.safetensors was changed or corrupted after it was saved/,
      ],
      [
        "a truncated optimizer file",
        (d) => Deno.truncate(`${ck(d)}/optimizer.safetensors`, 4096),
        /optimizer\.safetensors was changed or corrupted/,
      ],
      [
        "a missing model file",
        (d) => Deno.remove(`${ck(d)}/model.safetensors`),
        /model\.safetensors is missing; the checkpoint is incomplete/,
      ],
      [
        "the data position edited",
        (d) => editState(d, (s) => (s.sampler as { cursor: number }).cursor += 1),
        /trainer_state\.json was edited after it was saved/,
      ],
      [
        "the recorded hash of the model edited",
        (d) =>
          editState(
            d,
            (s) => (s.files as Record<string, string>)["model.safetensors"] = "0".repeat(64),
          ),
        /model\.safetensors was changed or corrupted .* recorded 0000000000000000…/,
      ],
      [
        "a version-1 checkpoint (no hashes) with its step edited",
        (d) =>
          editState(d, (s) => {
            Object.assign(s, { version: 1, step: 2, files: undefined, checksum: undefined });
          }),
        /trainer_state\.json says step 2, but model\.safetensors was saved at step 1/,
      ],
      [
        "trainer_state.json not JSON",
        (d) => Deno.writeTextFile(`${ck(d)}/trainer_state.json`, "{"),
        /trainer_state\.json is not a trainer checkpoint/,
      ],
      [
        "a bad line inside metrics.jsonl",
        async (d) => {
          const lines = (await Deno.readTextFile(`${d}/metrics.jsonl`)).split("\n");
          lines[0] = "{oops";
          await Deno.writeTextFile(`${d}/metrics.jsonl`, lines.join("\n"));
        },
        /metrics\.jsonl:1 is not valid JSON/,
      ],
      [
        "a flag that would change the arithmetic",
        async () => {},
        /was trained with --eval-batches 1, not 2; a resumed run keeps the settings/,
        ["--eval-batches", "2"],
      ],
    ];
    const failures: string[] = [];
    for (const [i, [what, tamper, re, flags]] of cases.entries()) {
      const dir = `${TMP}/tampered-${i}`;
      await copyDir(STEP1, dir);
      try {
        await tamper(dir);
      } catch (e) {
        failures.push(`${what}: cannot tamper: ${(e as Error).message}`); // e.g. no `files`
        continue;
      }
      const before = await snapshot(dir);
      const r = await cli("train", ["--resume", dir, ...(flags ?? [])]);
      const problems = [
        r.code !== 2 && `exit ${r.code}`,
        !/^train: error: [^\n]+\n$/.test(r.stderr) && "not one line",
        !re.test(r.stderr) && `stderr does not match ${re}`,
        / {4}at /.test(r.stderr) && "a stack trace",
        r.stdout !== "" && "printed to stdout",
      ].filter(Boolean);
      try {
        assert.deepEqual(await snapshot(dir), before);
      } catch {
        problems.push("the run directory changed");
      }
      if (problems.length) failures.push(`${what}: ${problems.join("; ")}\n  ${r.stderr}`);
    }
    // sample verifies a trainer checkpoint the same way.
    const dir = `${TMP}/tampered-sample`;
    await copyDir(STEP1, dir);
    await flipByte(`${dir}/checkpoint/model.safetensors`);
    const r = await cli("sample", ["--run", dir, "--max-tokens", "1"]);
    if (
      r.code !== 2 ||
      !/^sample: error: .*model\.safetensors was changed or corrupted[^\n]*\n$/.test(r.stderr)
    ) {
      failures.push(`sample of a corrupt checkpoint: exit ${r.code}\n  ${r.stderr}`);
    }
    assert.deepEqual(failures, [], failures.join("\n"));
  },
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(TMP, { recursive: true });
  } catch { /* ignore */ }
});
