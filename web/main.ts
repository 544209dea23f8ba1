/// <reference lib="dom" />
/**
 * The live page's entry point (bundled to dist/web.js; the library itself comes from
 * dist/moongrad.js): reads the controls and URL, runs the training loop one step at a time
 * between frames, redraws the charts, samples text between steps, and exposes the run to
 * automation as `window.moongradDemo`.
 *
 * URL parameters: `steps`, `optimizer`, `lr`, `tau`, `batch`, `seq`, `autostart=1`.
 */
import * as mg from "../mod.ts";
import {
  DEFAULT_SETTINGS,
  type OptimizerName,
  OPTIMIZERS,
  Trainer,
  type TrainSettings,
} from "./trainer.ts";
import { type History, render } from "./view.ts";

/** What automation (tests/web/chromium_test.mjs) reads from `window.moongradDemo`. */
export interface DemoState {
  /** Completed steps of the current run. */
  step: number;
  /** Training loss per step. */
  losses: number[];
  /** The max attention logit of each step (over layers and heads). */
  maxLogits: number[];
  /** [step, validation loss] (step 0 = before training). */
  valLosses: [number, number][];
  /** Tokens per second of each step. */
  tokensPerSecond: number[];
  /** True once a run finished all its steps. */
  done: boolean;
  /** The message of the error that stopped the page, else null. */
  error: string | null;
  /** The WebGPU adapter in use. */
  adapter: string;
  /** The last generated sample and its length in bytes (tokens). */
  sample: { text: string; bytes: number } | null;
}

const demo: DemoState = {
  step: 0,
  losses: [],
  maxLogits: [],
  valLosses: [],
  tokensPerSecond: [],
  done: false,
  error: null,
  adapter: "",
  sample: null,
};
(globalThis as unknown as { moongradDemo: DemoState }).moongradDemo = demo;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const form = $<HTMLFormElement>("settings");
const field = (name: string) => form.elements.namedItem(name) as HTMLInputElement;

function status(msg: string, kind: "" | "error" | "done" = ""): void {
  const el = $("status");
  el.textContent = msg;
  el.className = `status ${kind}`;
}

function fail(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  demo.error = msg;
  status(msg, "error");
  console.error(e);
}

/** Settings from the URL over the defaults. */
function urlSettings(): TrainSettings {
  const q = new URLSearchParams(location.search);
  const num = (k: string, d: number) => (q.has(k) && Number.isFinite(+q.get(k)!) ? +q.get(k)! : d);
  const opt = q.get("optimizer") as OptimizerName | null;
  return {
    ...DEFAULT_SETTINGS,
    optimizer: opt && OPTIMIZERS.includes(opt) ? opt : DEFAULT_SETTINGS.optimizer,
    lr: num("lr", DEFAULT_SETTINGS.lr),
    tau: num("tau", DEFAULT_SETTINGS.tau),
    steps: num("steps", DEFAULT_SETTINGS.steps),
    batch: num("batch", DEFAULT_SETTINGS.batch),
    seqLen: num("seq", DEFAULT_SETTINGS.seqLen),
  };
}

function fillForm(s: TrainSettings): void {
  (form.elements.namedItem("optimizer") as HTMLSelectElement).value = s.optimizer;
  for (const k of ["lr", "tau", "steps", "batch", "seqLen"] as const) field(k).value = String(s[k]);
}

/** The form's settings, or an error message naming the bad field. */
function readForm(): TrainSettings | string {
  const s: TrainSettings = {
    ...DEFAULT_SETTINGS,
    optimizer: (form.elements.namedItem("optimizer") as HTMLSelectElement).value as OptimizerName,
    lr: +field("lr").value,
    tau: +field("tau").value,
    steps: +field("steps").value,
    batch: +field("batch").value,
    seqLen: +field("seqLen").value,
  };
  if (!(s.lr > 0)) return "the learning rate must be > 0";
  if (!(s.tau > 0)) return "τ must be > 0";
  for (const [k, max] of [["steps", 1e6], ["batch", 32], ["seqLen", 512]] as const) {
    if (!Number.isInteger(s[k]) || s[k] < 1 || s[k] > max) {
      return `${k} must be an integer from 1 to ${max}`;
    }
  }
  return s;
}

let corpus = new Uint8Array(0);
let trainer: Trainer | null = null;
let history: History | null = null;
let stopRequested = false;
let running = false;
let frame = 0;

/** GPU work (training steps, sampling) runs one job at a time, in order. */
let gpuQueue: Promise<unknown> = Promise.resolve();
function exclusive<T>(job: () => Promise<T> | T): Promise<T> {
  const p = gpuQueue.then(job);
  gpuQueue = p.catch(() => {});
  return p;
}

function redraw(): void {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    render(history);
  });
}

function textBytes(): Uint8Array {
  const source = (form.elements.namedItem("source") as RadioNodeList).value;
  if (source === "builtin") return corpus;
  const text = (form.elements.namedItem("text") as HTMLTextAreaElement).value;
  return new TextEncoder().encode(text);
}

async function train(): Promise<void> {
  const s = readForm();
  const bytes = textBytes();
  if (typeof s === "string") return status(`cannot start: ${s}`, "error");
  if (bytes.length < 4 * (s.seqLen + 1)) {
    return status(
      `cannot start: the text has ${bytes.length} bytes; sequences of ${s.seqLen} need at least ${
        4 * (s.seqLen + 1)
      }`,
      "error",
    );
  }
  running = true;
  stopRequested = false;
  Object.assign(demo, { step: 0, losses: [], maxLogits: [], valLosses: [], done: false });
  demo.tokensPerSecond = [];
  $<HTMLButtonElement>("stop").disabled = false;
  try {
    const t = await exclusive(() => {
      trainer?.dispose();
      trainer = null;
      return new Trainer(bytes, s);
    });
    trainer = t;
    $<HTMLButtonElement>("generate").disabled = false;
    history = { settings: s, records: [], val: [], moeLayerIds: t.moeLayerIds, seconds: 0 };
    const p = t.params;
    $("params").textContent = `${(p.total / 1e6).toFixed(2)} M`;
    status(`evaluating the untrained model on ${t.sizes.val} validation bytes…`);
    const v0 = await exclusive(() => t.evaluate());
    history.val.push([0, v0]);
    demo.valLosses.push([0, v0]);
    redraw();
    const t0 = performance.now();
    while (t.step < s.steps && !stopRequested) {
      status(`training: step ${t.step + 1} of ${s.steps} · ${s.optimizer} · ${demo.adapter}`);
      const rec = await exclusive(() => t.trainStep());
      history.records.push(rec);
      history.seconds = (performance.now() - t0) / 1000;
      if (rec.valLoss !== undefined) {
        history.val.push([rec.step, rec.valLoss]);
        demo.valLosses.push([rec.step, rec.valLoss]);
      }
      demo.losses.push(rec.loss);
      demo.maxLogits.push(Math.max(...rec.maxLogits.flat()));
      demo.tokensPerSecond.push(rec.tokensPerSecond);
      demo.step = rec.step;
      redraw();
      await new Promise((r) => setTimeout(r, 0)); // let input and painting in
    }
    const secs = history.seconds.toFixed(1);
    status(
      stopRequested
        ? `stopped at step ${t.step} (${secs} s)`
        : `done: ${t.step} steps in ${secs} s`,
      "done",
    );
    demo.done = !stopRequested;
  } catch (e) {
    fail(e);
  } finally {
    running = false;
    $<HTMLButtonElement>("stop").disabled = true;
  }
}

async function sample(): Promise<void> {
  const f = $<HTMLFormElement>("sample");
  const get = (n: string) => (f.elements.namedItem(n) as HTMLInputElement).value;
  const out = $("sample-out");
  const btn = $<HTMLButtonElement>("generate");
  const t = trainer;
  if (!t) return;
  const prompt = get("prompt");
  const maxTokens = Math.max(1, Math.min(1000, Math.floor(+get("tokens") || 160)));
  const temperature = Math.max(0, +get("temperature") || 0);
  const esc = (x: string) =>
    x.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]!);
  btn.disabled = true;
  out.textContent = running ? "waiting for the current step…" : "";
  try {
    demo.sample = await exclusive(() =>
      t.sample(prompt, { maxTokens, temperature, seed: Date.now() % 1e9 }, (text) => {
        out.innerHTML = `<b>${esc(prompt)}</b>${esc(text)}`;
      })
    );
  } catch (e) {
    fail(e);
  } finally {
    btn.disabled = false;
  }
}

async function main(): Promise<void> {
  fillForm(urlSettings());
  form.addEventListener("change", () => {
    const paste = (form.elements.namedItem("source") as RadioNodeList).value === "paste";
    (form.elements.namedItem("text") as HTMLTextAreaElement).hidden = !paste;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (running) stopRequested = true;
    gpuQueue.then(() => waitIdle()).then(train);
  });
  $("stop").addEventListener("click", () => (stopRequested = true));
  $("sample").addEventListener("submit", (e) => {
    e.preventDefault();
    sample();
  });
  new ResizeObserver(redraw).observe(document.querySelector(".charts")!);
  render(null);

  const res = await fetch(new URL("corpus.txt", document.baseURI));
  if (!res.ok) throw new Error(`could not load corpus.txt (HTTP ${res.status})`);
  corpus = new Uint8Array(await res.arrayBuffer());
  $("corpus-size").textContent = `${(corpus.length / 1024).toFixed(1)} KB`;

  status("starting WebGPU…");
  const info = await mg.init();
  // Browsers often leave the description empty ("unknown adapter"): name vendor/architecture.
  const desc = info.description === "unknown adapter" ? "" : info.description;
  demo.adapter = desc || [info.vendor, info.architecture].filter(Boolean).join(" ") || "WebGPU";
  status(`ready · ${demo.adapter}${info.isFallbackAdapter ? " (software)" : ""}`);
  if (new URLSearchParams(location.search).get("autostart") === "1") await train();
}

/** Resolves once the previous run's loop has returned. */
async function waitIdle(): Promise<void> {
  while (running) await new Promise((r) => setTimeout(r, 20));
}

globalThis.addEventListener("unhandledrejection", (e) => fail(e.reason));
main().catch(fail);
