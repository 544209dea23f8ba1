/**
 * `deno task train`: trains the tiny Kimi K2-style model (MLA + DeepSeekMoE) with MuonClip on
 * text tokenised by `--tokenizer` (bytes by default, or a BPE tokenizer, whose size sets the
 * model's vocab_size), showing progress and writing metrics.jsonl, checkpoints (with the
 * tokenizer) and report.html to the run directory. `--resume DIR` continues a run with exactly
 * the losses it would have had. `--help` lists every flag.
 */
import * as mg from "../mod.ts";
import { StepStats } from "../nn/step_stats.ts";
import { noGrad } from "../core/autograd.ts";
import { type KimiConfig, makeConfig } from "../nn/config.ts";
import { toHfConfig } from "../nn/hf_config.ts";
import { KimiLM, parameterCounts } from "../nn/model.ts";
import { parseFlags } from "./args.ts";
import {
  CHECKPOINT,
  disposeHalves,
  findCheckpoint,
  halvesMeta,
  isDirectory,
  loadCheckpointTensors,
  readTrainerState,
  removeStale,
  RUN_FILES,
  saveCheckpoint,
  STALE,
  type TrainerState,
  verifyCheckpoint,
  writeTextAtomic,
} from "./checkpoint.ts";
import type { TextTokenizer } from "../tokenizer/mod.ts";
import {
  type Batch,
  BatchSampler,
  type Corpus,
  DEFAULT_CORPUS,
  loadDefaultCorpus,
  loadTextFile,
  loadTokenizer,
  sha256Hex,
  splitCorpus,
  tokenizeSplit,
  validationBatches,
} from "./data.ts";
import { CliError, runMain } from "./errors.ts";
import {
  appendMetrics,
  type MetricRecord,
  readMetrics,
  readMetricsFile,
  readRunInfo,
  type RunInfo,
  truncateMetrics,
} from "./metrics.ts";
import { makeOptimizer } from "./optimizer.ts";
import {
  resolveControls,
  resolveTrainFlags,
  type ResumedSettings,
  resumeSettings,
  type RunControls,
  type RunSettings,
  TRAIN_FLAGS,
  trainHelp,
} from "./options.ts";
import type { Flags } from "./args.ts";
import { fmtEta, Progress } from "./progress.ts";
import { summarize, writeReport } from "./report.ts";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function isEmptyDir(path: string): Promise<boolean> {
  for await (const _ of Deno.readDir(path)) return false;
  return true;
}

function parentDir(path: string): string {
  const p = path.replace(/\/+$/, "");
  const i = p.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : p.slice(0, i);
}

/** Creates the run directory (an OS error becomes a CliError naming --out). */
async function makeRunDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (e) {
    throw new CliError(`--out ${dir} cannot be created: ${(e as Error).message}`);
  }
}

/** The line reporting leftovers of an interrupted run that were removed (none: no line). */
function staleNote(removed: string[]): string[] {
  return removed.length
    ? [`removed ${removed.length} leftover(s) of an interrupted run: ${removed.join(", ")}`]
    : [];
}

function timestamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${
    p(d.getMinutes())
  }${p(d.getSeconds())}`;
}

/** The preset's config with the tokenizer's vocabulary size. */
function modelConfig(preset: string, vocabSize: number): KimiConfig {
  return makeConfig({ ...makeConfig(preset as "tiny"), vocab_size: vocabSize });
}

/** Where a run writes and where it starts from. */
interface RunPlan {
  settings: RunSettings;
  controls: RunControls;
  runDir: string;
  /** The run's tokenizer (a resumed run's comes from its checkpoint). */
  tokenizer: TextTokenizer;
  /** Lines printed before training starts (what the resume restored, changed or verified). */
  notes: string[];
  /** Set when resuming. */
  resume?: { ckptDir: string; state: TrainerState; fromRunDir: string };
  /** Set when runDir holds a run that stopped before its first checkpoint: it starts over. */
  restart?: boolean;
}

/**
 * For a directory holding run.json but no checkpoint (a run stopped before its first one):
 * the note saying it starts again, after checking it holds nothing but that run's files.
 */
async function restartNote(dir: string): Promise<string> {
  for await (const e of Deno.readDir(dir)) {
    if (!RUN_FILES.test(e.name) && !STALE.test(e.name)) {
      throw new CliError(
        `${dir} holds a run without a checkpoint, but also ${e.name}, which is not a run file; ` +
          "nothing was overwritten",
      );
    }
  }
  return `${dir} stopped before its first checkpoint: starting it again from step 0 ` +
    "(its run.json and metrics.jsonl are replaced)";
}

/** Checks that `--out dir` can be created (no file on its path). */
async function checkCreatable(dir: string): Promise<void> {
  let p = parentDir(dir);
  while (!(await exists(p))) p = parentDir(p);
  if (!(await Deno.stat(p)).isDirectory) {
    throw new CliError(`--out ${dir} cannot be created: ${p} is a file, not a directory`);
  }
}

/** What resumeSettings changed or filled in, as lines for the user. */
function settingNotes(r: ResumedSettings, from: string): string[] {
  const notes: string[] = [];
  if (r.changed.length) notes.push(`settings changed on resume: ${r.changed.join(", ")}`);
  if (r.defaulted.length) {
    notes.push(
      `${from} predates ${r.defaulted.length > 1 ? "these settings" : "this setting"}; ` +
        `using the default: ${r.defaulted.join(", ")}`,
    );
  }
  return notes;
}

/** Validates flags and directories before anything is created or overwritten. */
async function plan(argv: string[]): Promise<RunPlan | null> {
  const { flags } = parseFlags(argv, TRAIN_FLAGS);
  if (flags.help) {
    console.log(trainHelp());
    return null;
  }
  const controls = resolveControls(flags);
  if (controls.resume) return await planResume(flags, controls);
  const { settings } = resolveTrainFlags(flags);
  const runDir = (controls.out ?? `runs/${timestamp()}`).replace(/\/+$/, "");
  const notes: string[] = [];
  let restart = false;
  if (await isDirectory(runDir, "--out")) {
    if (await exists(`${runDir}/run.json`)) {
      if ((await findCheckpoint(runDir)) !== null) {
        throw new CliError(
          `${runDir} already holds a run; continue it with --resume ${runDir} or choose another --out`,
        );
      }
      notes.push(await restartNote(runDir));
      restart = true;
    } else if (!(await isEmptyDir(runDir))) {
      throw new CliError(
        `--out ${runDir} already exists and is not empty; nothing was overwritten`,
      );
    }
  } else await checkCreatable(runDir);
  const tokenizer = await loadTokenizer(settings.tokenizer);
  return { settings, controls, runDir, tokenizer, notes, restart };
}

/**
 * The plan of `--resume DIR`: the checkpoint verified (hashes, steps, checksum), every setting
 * restored, the flags given now checked against them; nothing is written.
 */
async function planResume(flags: Flags, controls: RunControls): Promise<RunPlan> {
  const dir = controls.resume!.replace(/\/+$/, "");
  const ckptDir = await findCheckpoint(dir);
  const out = controls.out?.replace(/\/+$/, "");
  if (ckptDir === null) {
    if (!(await exists(`${dir}/run.json`))) {
      throw new CliError(`--resume ${dir}: no checkpoint there (expected ${dir}/${CHECKPOINT}/)`);
    }
    // Stopped before its first checkpoint: start it again with the settings it was given.
    const resumed = resumeSettings((await readRunInfo(dir)).settings, flags, dir);
    const notes = settingNotes(resumed, `${dir}/run.json`);
    const runDir = out ?? dir;
    if (runDir === dir) notes.unshift(await restartNote(dir));
    else if (await isDirectory(runDir, "--out")) {
      if (!(await isEmptyDir(runDir))) {
        throw new CliError(
          `--out ${runDir} already exists and is not empty; nothing was overwritten`,
        );
      }
    } else await checkCreatable(runDir);
    const tokenizer = await loadTokenizer(resumed.settings.tokenizer);
    return {
      settings: resumed.settings,
      controls,
      runDir,
      tokenizer,
      notes,
      restart: runDir === dir,
    };
  }
  const state = await readTrainerState(ckptDir);
  const notes: string[] = [];
  const note = await verifyCheckpoint(ckptDir, state);
  if (note) notes.push(note);
  const resumed = resumeSettings(state.settings, flags, dir);
  notes.push(...settingNotes(resumed, `${ckptDir}/trainer_state.json`));
  const merged = resumed.settings;
  const fromRunDir = ckptDir === dir ? parentDir(dir) : dir;
  if (!(await exists(`${fromRunDir}/run.json`))) {
    throw new CliError(`${fromRunDir} is not a training run directory (no run.json)`);
  }
  const info = await readRunInfo(fromRunDir);
  const tokenizer = await loadTokenizer(merged.tokenizer === "bytes" ? "bytes" : ckptDir);
  const want = JSON.stringify(toHfConfig(modelConfig(merged.preset, tokenizer.vocabSize)));
  if (JSON.stringify(info.config) !== want) {
    throw new CliError(
      `${fromRunDir} holds a model with a different config than preset ${merged.preset}; it cannot be resumed`,
    );
  }
  let runDir = fromRunDir;
  if (out && out !== fromRunDir) {
    runDir = out;
    if (await isDirectory(runDir, "--out")) {
      if (!(await isEmptyDir(runDir))) {
        throw new CliError(
          `--out ${runDir} already exists and is not empty; nothing was overwritten`,
        );
      }
    } else await checkCreatable(runDir);
  }
  if (state.step >= merged.steps) {
    throw new CliError(`${dir} already finished all ${merged.steps} steps`);
  }
  if (controls.stopAt !== undefined && controls.stopAt <= state.step) {
    throw new CliError(
      `--stop-at ${controls.stopAt} is not after the checkpoint's step ${state.step}`,
    );
  }
  // A bad line inside metrics.jsonl is an error now, before anything is written (a torn last
  // line is dropped when the run continues).
  await readMetricsFile(`${fromRunDir}/metrics.jsonl`);
  return {
    settings: merged,
    controls,
    runDir,
    tokenizer,
    notes,
    resume: { ckptDir, state, fromRunDir },
  };
}

/** The training text, split, with the SHA-256 of all of it (and the default corpus's name). */
async function loadCorpus(s: RunSettings): Promise<Corpus & { sha256: string; name?: string }> {
  if (s.data) {
    const bytes = await loadTextFile(s.data);
    return { ...splitCorpus(bytes, s.seqLen, `--data ${s.data}`), sha256: await sha256Hex(bytes) };
  }
  const { bytes, sha256 } = await loadDefaultCorpus();
  const source = `${DEFAULT_CORPUS.path} (${DEFAULT_CORPUS.name})`;
  return { ...splitCorpus(bytes, s.seqLen, source), sha256, name: DEFAULT_CORPUS.name };
}

function toTensors(b: Batch, rows: number, seqLen: number): [mg.Tensor, mg.Tensor] {
  return [
    mg.tensor(b.ids, { shape: [rows, seqLen], dtype: "i32" }),
    mg.tensor(b.targets, { shape: [rows, seqLen], dtype: "i32" }),
  ];
}

async function train(p: RunPlan): Promise<void> {
  const { settings: s, controls: c, runDir, tokenizer: tok } = p;
  const notes = [...p.notes];
  const corpus = await loadCorpus(s);
  const was = p.resume?.state;
  if (
    p.resume && was &&
    (corpus.hash !== was.dataHash || (was.dataSha256 ?? corpus.sha256) !== corpus.sha256)
  ) {
    throw new CliError(
      `the training text differs from the one ${p.resume.fromRunDir} was trained on (${corpus.source}); it cannot be resumed`,
    );
  }
  const tokens = tokenizeSplit(corpus, tok, s.seqLen);
  const gpu = await mg.init();
  const config = modelConfig(s.preset, tok.vocabSize);
  const model = new KimiLM(config, { seed: s.seed });
  const opt = makeOptimizer(model, s);
  const sampler = new BatchSampler(tokens.train, s.batch, s.seqLen, s.seed);
  const valBatches = validationBatches(tokens.val, s.batch, s.seqLen, s.evalBatches);
  // Bits per byte: total nats over the validation targets / ln 2 / their bytes.
  let valTargets = 0, valTargetBytes = 0;
  for (const b of valBatches) {
    valTargets += b.targets.length;
    for (const id of b.targets) valTargetBytes += tok.decodeBytes([id]).length;
  }
  const bitsPerByte = (loss: number) => (loss * valTargets) / Math.LN2 / valTargetBytes;
  const metricsPath = `${runDir}/metrics.jsonl`;
  let step = 0;
  let elapsed = 0;

  if (p.resume) {
    const halves = await loadCheckpointTensors(p.resume.ckptDir, model, p.resume.state);
    try {
      opt.loadStateDict(halves);
    } catch (e) {
      throw new CliError(
        `${p.resume.ckptDir}/optimizer.safetensors does not match the optimizer: ${
          (e as Error).message
        }`,
      );
    } finally {
      disposeHalves(halves);
    }
    sampler.state = p.resume.state.sampler;
    step = p.resume.state.step;
    elapsed = p.resume.state.elapsedSeconds;
    let torn: boolean;
    if (runDir !== p.resume.fromRunDir) {
      await makeRunDir(runDir);
      await Deno.copyFile(`${p.resume.fromRunDir}/run.json`, `${runDir}/run.json`);
      const old = await readMetricsFile(`${p.resume.fromRunDir}/metrics.jsonl`);
      await writeTextAtomic(metricsPath, old.records.map((r) => JSON.stringify(r) + "\n").join(""));
      torn = old.torn;
    } else {
      notes.push(...staleNote(await removeStale(runDir)));
      torn = false;
    }
    if (await truncateMetrics(metricsPath, step) || torn) {
      notes.push("metrics.jsonl: dropped a partial last line (a kill while it was written)");
    }
  } else {
    await makeRunDir(runDir);
    if (p.restart) {
      notes.push(...staleNote(await removeStale(runDir)));
      await Deno.remove(`${runDir}/report.html`).catch(() => {});
    }
    const info: RunInfo = {
      version: 1,
      created: new Date().toISOString(),
      settings: s,
      config: toHfConfig(config),
      params: parameterCounts(config),
      corpus: {
        source: corpus.source,
        ...(corpus.name ? { name: corpus.name } : {}),
        bytes: corpus.bytes,
        trainBytes: corpus.train.length,
        valBytes: corpus.val.length,
        hash: corpus.hash,
        sha256: corpus.sha256,
      },
      tokenizer: {
        name: s.tokenizer,
        description: tok.description,
        vocabSize: tok.vocabSize,
        trainTokens: tokens.train.length,
        valTokens: tokens.val.length,
        valBytesPerToken: valTargetBytes / valTargets,
      },
      device: gpu.description || "WebGPU adapter",
    };
    await writeTextAtomic(`${runDir}/run.json`, JSON.stringify(info, null, 1) + "\n");
    await writeTextAtomic(metricsPath, "");
  }

  const stopAt = Math.min(s.steps, c.stopAt ?? s.steps);
  const counts = parameterCounts(config);
  const progress = new Progress(s.steps);
  progress.line(
    `${p.resume ? `resuming ${p.resume.fromRunDir} at step ${step}` : "training"}: ${s.preset} ` +
      `K2-style model, ${(counts.total / 1e6).toFixed(2)}M parameters ` +
      `(${(counts.active / 1e6).toFixed(2)}M active), ${s.optimizer}, ${s.steps} steps of ` +
      `${s.batch}×${s.seqLen} tokens on ${gpu.description || "WebGPU"}`,
  );
  for (const note of notes) progress.line(note);
  const n = (x: number) => x.toLocaleString("en-US");
  progress.line(
    `data: ${corpus.source}, ${n(corpus.train.length)} train / ` +
      `${n(corpus.val.length)} validation bytes` +
      (s.tokenizer === "bytes"
        ? ""
        : ` = ${n(tokens.train.length)} / ${n(tokens.val.length)} tokens (${tok.description}, ` +
          `${(corpus.train.length / tokens.train.length).toFixed(2)} bytes per token)`) +
      `; output: ${runDir}/`,
  );

  const evaluate = async (): Promise<number> => {
    model.eval();
    try {
      const losses = noGrad(() =>
        valBatches.map((b) => {
          const rows = b.ids.length / s.seqLen;
          const [x, y] = toTensors(b, rows, s.seqLen);
          const l = model.loss(x, y);
          x.dispose();
          y.dispose();
          return l;
        })
      );
      const vals = await Promise.all(losses.map((l) => l.item()));
      for (const l of losses) l.dispose();
      return vals.reduce((a, b) => a + b, 0) / vals.length;
    } finally {
      model.train();
    }
  };

  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) Deno.exit(130);
    stopRequested = true;
    progress.line(
      "interrupt: stopping after this step with a checkpoint (Ctrl-C again to quit now)",
    );
  };
  try {
    Deno.addSignalListener("SIGINT", onSigint);
  } catch { /* signals unsupported here */ }

  const checkpoint = async (elapsedSeconds: number) => {
    const halves = opt.stateDict();
    try {
      await saveCheckpoint(runDir, model, halves, {
        step,
        sampler: sampler.state,
        optimizer: halvesMeta(halves),
        settings: s,
        dataHash: corpus.hash,
        dataSha256: corpus.sha256,
        elapsedSeconds,
      }, tok);
    } finally {
      disposeHalves(halves);
    }
    await writeReport(runDir);
  };

  let lastVal: number | undefined;
  if (step === 0) {
    lastVal = await evaluate();
    await appendMetrics(metricsPath, [{ step: 0, val_loss: lastVal }]);
    progress.line(
      `step 0: validation loss ${lastVal.toFixed(3)}, ${bitsPerByte(lastVal).toFixed(3)} ` +
        `bits/byte (uniform guess: ln ${tok.vocabSize} = ${Math.log(tok.vocabSize).toFixed(3)})`,
    );
  }
  const tokensPerStep = s.batch * s.seqLen;
  const sessionStart = performance.now();
  const sessionStep0 = step;
  let tpsEma = 0;
  let savedAt = -1;
  try {
    while (step < stopAt && !stopRequested) {
      const t0 = performance.now();
      const lr = opt.lrAt(step);
      const [x, y] = toTensors(sampler.next(), s.batch, s.seqLen);
      const stats = new StepStats();
      let lossValue: number, logits: Float32Array[], loads: Int32Array[];
      try {
        const loss = model.loss(x, y, { stats });
        x.dispose();
        y.dispose();
        loss.backward();
        await opt.step(stats);
        model.updateRouterBias(stats, s.routerGamma);
        let read;
        [lossValue, read] = await Promise.all([loss.item(), stats.read(model)]);
        ({ maxLogits: logits, loads } = read);
        loss.dispose();
      } finally {
        stats.dispose();
      }
      opt.zeroGrad();
      step++;
      const dt = (performance.now() - t0) / 1000;
      if (!Number.isFinite(lossValue)) {
        throw new Error(
          `the loss became ${lossValue} at step ${step}; the last checkpoint is in ${runDir}/${CHECKPOINT}; try a lower --lr`,
        );
      }
      const maxLogit = logits.map((l) => Math.max(...l));
      const clipped = logits.map((l) => Array.from(l).filter((v) => v > s.tau).length);
      const rec: MetricRecord = {
        step,
        loss: lossValue,
        lr,
        max_logit: maxLogit,
        clipped_heads: clipped,
        expert_load: loads.map((l) => Array.from(l)),
        tokens: step * tokensPerStep,
        tokens_per_s: tokensPerStep / dt,
      };
      tpsEma = tpsEma === 0 ? tokensPerStep / dt : 0.8 * tpsEma + 0.2 * (tokensPerStep / dt);
      const evalNow = step % s.evalEvery === 0 || step === s.steps;
      if (evalNow) {
        lastVal = await evaluate();
        rec.val_loss = lastVal;
      }
      const sessionSeconds = (performance.now() - sessionStart) / 1000;
      rec.time_s = elapsed + sessionSeconds;
      await appendMetrics(metricsPath, [rec]);
      const perStep = sessionSeconds / (step - sessionStep0);
      progress.update({
        step,
        total: s.steps,
        loss: lossValue,
        tokensPerSecond: tpsEma,
        maxLogit: Math.max(...maxLogit),
        clipped: clipped.reduce((a, b) => a + b, 0),
        etaSeconds: perStep * (s.steps - step),
        valLoss: lastVal,
      });
      if (evalNow) {
        progress.line(
          `step ${step}: validation loss ${lastVal!.toFixed(3)}, ` +
            `${bitsPerByte(lastVal!).toFixed(3)} bits/byte`,
        );
      }
      if (step % s.checkpointEvery === 0 && step < stopAt) {
        await checkpoint(rec.time_s);
        savedAt = step;
      }
    }
  } finally {
    try {
      Deno.removeSignalListener("SIGINT", onSigint);
    } catch { /* ignore */ }
  }
  progress.done();
  elapsed += (performance.now() - sessionStart) / 1000;
  if (savedAt !== step) await checkpoint(elapsed);
  const sum = summarize(await readMetrics(metricsPath));
  const val = (v?: [number, number]) => (v ? `${v[1].toFixed(3)} (step ${v[0]})` : "–");
  const finished = step >= s.steps;
  progress.line(
    `${finished ? "done" : "stopped"}: ${step}/${s.steps} steps, ${
      sum.tokens.toLocaleString("en-US")
    } tokens in ${fmtEta(sum.seconds)} (${
      sum.tokensPerSecond.toFixed(0)
    } tokens/s); validation loss ${val(sum.firstVal)} → ${val(sum.lastVal)}${
      sum.lastVal ? ` = ${bitsPerByte(sum.lastVal[1]).toFixed(3)} bits/byte` : ""
    }; max attention logit ${
      sum.maxLogit ? sum.maxLogit.value.toFixed(2) : "–"
    } (τ = ${s.tau}, ${sum.clippedHeadSteps} head-steps ${
      s.optimizer === "muonclip" ? "clipped" : "over τ"
    })`,
  );
  progress.line(
    `checkpoint: ${runDir}/${CHECKPOINT}/ (model.safetensors + config.json + tokenizer.json ` +
      "load in transformers)",
  );
  progress.line(`report: ${runDir}/report.html`);
  if (!finished) progress.line(`continue with: deno task train --resume ${runDir}`);
  else progress.line(`sample with: deno task sample --run ${runDir} --prompt "export function "`);
  opt.dispose();
  model.dispose();
  if (stopRequested) Deno.exitCode = 130; // interrupted (Ctrl-C), checkpoint written
}

if (import.meta.main) {
  await runMain("train", async () => {
    const p = await plan(Deno.args);
    if (p) await train(p);
  });
}
