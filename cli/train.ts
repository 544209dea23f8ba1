/**
 * `deno task train`: trains a small Kimi K2-style model (MLA + DeepSeekMoE; the tiny preset, a
 * `--config` config.json or shape flags, or `--init-from` a checkpoint's weights) with MuonClip on
 * text tokenised by `--tokenizer` (bytes by default, or a BPE tokenizer, whose size sets the
 * model's vocab_size), showing progress and writing metrics.jsonl, checkpoints (with the
 * tokenizer) and report.html to the run directory. `--resume DIR` continues a run with exactly
 * the losses it would have had (a larger `--steps` extends it). `--grad-accum K` sums K
 * micro-batch gradients (losses ×1/K) into one update with one StepStats; `--grad-clip`
 * clips the global gradient norm. Each step also measures the pre-clip gradient norm (one
 * readback) and the update norm (a copy of the parameters held over the optimizer step).
 * `--help` lists every flag.
 */
import * as mg from "../mod.ts";
import { StepStats } from "../nn/step_stats.ts";
import { noGrad } from "../core/autograd.ts";
import type { KimiConfig } from "../nn/config.ts";
import { loadConfig, toHfConfig } from "../nn/hf_config.ts";
import { loadInto } from "../io/mod.ts";
import { clipGradNorm, UpdateNorm } from "../optim/grad_norm.ts";
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
import { makeOptimizer, makeSchedule } from "./optimizer.ts";
import { configFromRun, hasShape, resolveModelConfig } from "./model_config.ts";
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
import { gitCommit, summarize, writeReport } from "./report.ts";

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

/** The largest model the trainer agrees to build (a full-size config.json would not fit). */
const MAX_PARAMS = 2e9;

/** Checks that `config` can train here with `seqLen`-token sequences. */
function checkTrainable(config: KimiConfig, seqLen: number, what: string): void {
  const total = parameterCounts(config).total;
  if (total > MAX_PARAMS) {
    throw new CliError(
      `${what} has ${(total / 1e9).toFixed(1)}B parameters; the trainer builds at most ${
        MAX_PARAMS / 1e9
      }B`,
    );
  }
  if (seqLen > config.max_position_embeddings) {
    throw new CliError(
      `--seq-len must be <= ${config.max_position_embeddings} (max_position_embeddings of ${what}), got ${seqLen}`,
    );
  }
}

/** The directory holding config.json + model.safetensors for `--init-from DIR`. */
async function weightsDir(dir: string): Promise<string> {
  const d = dir.replace(/\/+$/, "");
  for (const c of [d, `${d}/${CHECKPOINT}`]) {
    if ((await exists(`${c}/config.json`)) && (await exists(`${c}/model.safetensors`))) return c;
  }
  throw new CliError(
    `--init-from ${dir}: no config.json + model.safetensors there (nor in ${d}/${CHECKPOINT}/)`,
  );
}

/**
 * The model config of a new run: the source's config.json with `--init-from` (no shape flags
 * allowed), else the preset or `--config` with the shape flags; and the weights directory.
 */
async function newRunModel(
  settings: RunSettings,
  initFrom: string | undefined,
  tokenizer: TextTokenizer,
): Promise<{ config: KimiConfig; initFrom?: string }> {
  if (initFrom) {
    if (hasShape(settings)) {
      throw new CliError(
        "--init-from takes the model shape from its config.json; drop --config and the shape flags",
      );
    }
    const src = await weightsDir(initFrom);
    let config: KimiConfig;
    try {
      config = await loadConfig(`${src}/config.json`);
    } catch (e) {
      throw new CliError(`--init-from ${initFrom}: ${(e as Error).message}`);
    }
    if (config.vocab_size !== tokenizer.vocabSize) {
      throw new CliError(
        `--init-from ${initFrom}: the model's vocab_size is ${config.vocab_size} but the ` +
          `tokenizer (${tokenizer.description}) has ${tokenizer.vocabSize}; pass --tokenizer ${src}`,
      );
    }
    checkTrainable(config, settings.seqLen, `--init-from ${initFrom}`);
    return { config, initFrom: src };
  }
  const config = await resolveModelConfig(settings.preset, settings, tokenizer.vocabSize);
  checkTrainable(config, settings.seqLen, settings.config ?? `preset ${settings.preset}`);
  return { config };
}

/** Where a run writes and where it starts from. */
interface RunPlan {
  settings: RunSettings;
  controls: RunControls;
  runDir: string;
  /** The run's tokenizer (a resumed run's comes from its checkpoint). */
  tokenizer: TextTokenizer;
  /** The model's config (a resumed run's is its run.json's). */
  config: KimiConfig;
  /** `--init-from`: the directory whose weights the model starts from. */
  initFrom?: string;
  /** Set when a resumed run's --steps extends it: its previous total. */
  extendedFrom?: number;
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
  const model = await newRunModel(settings, controls.initFrom, tokenizer);
  return { settings, controls, runDir, tokenizer, ...model, notes, restart };
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
    const before = await readRunInfo(dir);
    const resumed = resumeSettings(before.settings, flags, dir);
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
    const model = await newRunModel(resumed.settings, before.initFrom, tokenizer);
    return {
      settings: resumed.settings,
      controls,
      runDir,
      tokenizer,
      ...model,
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
  // The model is the one run.json records (its shape may have come from --config, shape flags
  // or --init-from, none of which need to be repeated).
  let config: KimiConfig;
  try {
    config = configFromRun(info.config);
  } catch (e) {
    throw new CliError(`${fromRunDir}/run.json: its model config: ${(e as Error).message}`);
  }
  if (config.vocab_size !== tokenizer.vocabSize) {
    throw new CliError(
      `${fromRunDir} holds a model with vocab_size ${config.vocab_size} but its tokenizer has ${tokenizer.vocabSize}; it cannot be resumed`,
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
    config,
    notes,
    resume: { ckptDir, state, fromRunDir },
    extendedFrom: resumed.extendedFrom,
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
  const config = p.config;
  const model = new KimiLM(config, { seed: s.seed });
  if (p.initFrom) {
    try {
      await loadInto(model, `${p.initFrom}/model.safetensors`);
    } catch (e) {
      model.dispose();
      throw new CliError(
        `--init-from ${p.initFrom}: model.safetensors does not match its config.json: ${
          (e as Error).message
        }`,
      );
    }
  }
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
    if (p.extendedFrom !== undefined) {
      // The run.json of an extended run records the new total.
      const info = await readRunInfo(runDir);
      info.settings = { ...info.settings, steps: s.steps };
      await writeTextAtomic(`${runDir}/run.json`, JSON.stringify(info, null, 1) + "\n");
    }
  } else {
    await makeRunDir(runDir);
    if (p.restart) {
      notes.push(...staleNote(await removeStale(runDir)));
      await Deno.remove(`${runDir}/report.html`).catch(() => {});
      await Deno.remove(`${runDir}/sample.txt`).catch(() => {});
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
      command: [...Deno.args],
      ...await gitCommit().then((c) => (c ? { gitCommit: c } : {})),
      ...(p.initFrom ? { initFrom: p.initFrom } : {}),
    };
    await writeTextAtomic(`${runDir}/run.json`, JSON.stringify(info, null, 1) + "\n");
    await writeTextAtomic(metricsPath, "");
  }

  const stopAt = Math.min(s.steps, c.stopAt ?? s.steps);
  const K = s.gradAccum;
  const counts = parameterCounts(config);
  const progress = new Progress(s.steps);
  progress.line(
    `${p.resume ? `resuming ${p.resume.fromRunDir} at step ${step}` : "training"}: ${s.preset} ` +
      `K2-style model, ${(counts.total / 1e6).toFixed(2)}M parameters ` +
      `(${(counts.active / 1e6).toFixed(2)}M active), ${s.optimizer}, ${s.steps} steps of ` +
      `${K > 1 ? `${K} micro-batches of ` : ""}${s.batch}×${s.seqLen} tokens on ${
        gpu.description || "WebGPU"
      }` + (p.initFrom ? `; weights from ${p.initFrom}` : "") +
      (s.gradClip !== null ? `; gradients clipped to global norm ${s.gradClip}` : ""),
  );
  for (const note of notes) progress.line(note);
  if (p.extendedFrom !== undefined) {
    const old = makeSchedule(s.lr, { ...s, steps: p.extendedFrom });
    const now = makeSchedule(s.lr, s);
    progress.line(
      `extending the run from ${p.extendedFrom} to ${s.steps} steps: the ${s.schedule} ` +
        `learning-rate schedule is recomputed for ${s.steps} steps` +
        (s.schedule === "constant"
          ? " (constant after warm-up: unchanged)"
          : `, so the lr of step ${step + 1} is ${now(step).toPrecision(3)} (the ` +
            `${p.extendedFrom}-step schedule's was ${
              old(Math.min(step, p.extendedFrom - 1)).toPrecision(3)
            })`),
    );
  }
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
  const tokensPerStep = s.batch * s.seqLen * K;
  const sessionStart = performance.now();
  const sessionStep0 = step;
  let tpsEma = 0;
  let savedAt = -1;
  try {
    while (step < stopAt && !stopRequested) {
      const t0 = performance.now();
      const lr = opt.lrAt(step);
      // K micro-batches, each loss ×1/K, gradients summed: the update of one K× batch. One
      // StepStats for all of them: QK-Clip sees the max logit over every forward of the step.
      const stats = new StepStats();
      let lossValue: number, logits: Float32Array[], loads: Int32Array[];
      let gradNorm: number, updateNorm: number;
      let heads: { maxLogits: number[][]; gammas: number[][] } | undefined;
      const losses: mg.Tensor[] = [];
      try {
        for (let k = 0; k < K; k++) {
          const [x, y] = toTensors(sampler.next(), s.batch, s.seqLen);
          const loss = model.loss(x, y, { stats });
          x.dispose();
          y.dispose();
          losses.push(loss);
          if (K === 1) loss.backward();
          else mg.scope(() => mg.mul(loss, 1 / K).backward());
        }
        // The global gradient norm before clipping (measured either way, for the metrics).
        gradNorm = await clipGradNorm(model, s.gradClip ?? Infinity);
        const update = new UpdateNorm(model);
        try {
          await opt.step(stats);
        } catch (e) {
          update.dispose();
          throw e;
        }
        model.updateRouterBias(stats, s.routerGamma);
        let read, lossValues;
        [lossValues, read, updateNorm, heads] = await Promise.all([
          Promise.all(losses.map((l) => l.item())),
          stats.read(model),
          update.measure(),
          opt.headStats?.(),
        ]);
        lossValue = lossValues.reduce((a, b) => a + b, 0) / K;
        ({ maxLogits: logits, loads } = read);
      } finally {
        for (const l of losses) l.dispose();
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
        head_max_logit: logits.map((l) => Array.from(l)),
        ...(heads
          ? {
            clip_gamma: heads.gammas.flatMap((g, layer) =>
              g.flatMap((gamma, head) => (gamma < 1 ? [{ layer, head, gamma }] : []))
            ),
          }
          : {}),
        grad_norm: gradNorm,
        update_norm: updateNorm,
        ...(K > 1 ? { micro_batches: K } : {}),
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
  await writeSample(model, tok, s.seed, `${runDir}/sample.txt`);
  if (savedAt !== step) await checkpoint(elapsed);
  else await writeReport(runDir);
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

/** The prompt of the sample the report shows. */
const SAMPLE_PROMPT = "export function ";

/** Writes a short generated sample (temperature 0.8, seeded) for the report. */
async function writeSample(
  model: KimiLM,
  tok: TextTokenizer,
  seed: number,
  path: string,
): Promise<void> {
  const ids = tok.encode(SAMPLE_PROMPT);
  const prompt = mg.tensor(Int32Array.from(ids), { shape: [1, ids.length], dtype: "i32" });
  model.eval();
  try {
    const [out] = await model.generate(prompt, { maxNewTokens: 48, temperature: 0.8, seed });
    const bytes: number[] = [];
    for (const id of [...ids, ...out]) {
      try {
        bytes.push(...tok.decodeBytes([id]));
      } catch {
        bytes.push(0xef, 0xbf, 0xbd); // an id the tokenizer leaves unused: U+FFFD
      }
    }
    await writeTextAtomic(path, new TextDecoder().decode(new Uint8Array(bytes)) + "\n");
  } finally {
    prompt.dispose();
    model.train();
  }
}

if (import.meta.main) {
  await runMain("train", async () => {
    const p = await plan(Deno.args);
    if (p) await train(p);
  });
}
