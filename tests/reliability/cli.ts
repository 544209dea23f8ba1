/**
 * Helpers of the CLI reliability tests: run a CLI in a subprocess (to completion, or in the
 * background to be killed), a fixture text, and a byte-level snapshot of a directory tree.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "../../cli/data.ts";

/** The repository root. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** What a finished CLI process left. */
export interface Result {
  /** Exit code. */
  code: number;
  /** Its stdout. */
  stdout: string;
  /** Its stderr. */
  stderr: string;
}

function command(script: string, args: string[], env: Record<string, string>): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `cli/${script}.ts`, ...args],
    cwd: ROOT,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp",
      NO_COLOR: "1",
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  });
}

function decode(out: Deno.CommandOutput): Result {
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `deno run -A cli/<script>.ts ...args` to completion. */
export async function cli(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Result> {
  return decode(await command(script, args, env).output());
}

/** Asserts exit code 0 (the message shows both streams). */
export function ok(r: Result): Result {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

/**
 * Starts the CLI, waits until `ready()` holds (polled every 2 ms), kills it with SIGKILL and
 * returns what it printed. Fails when the process exits before `ready()` held.
 */
export async function killWhen(
  script: string,
  args: string[],
  ready: () => Promise<boolean>,
  what: string,
): Promise<Result> {
  const child = command(script, args, {}).spawn();
  const output = child.output();
  let exited = false;
  child.status.then(() => exited = true);
  while (!(await ready())) {
    if (exited) {
      const r = decode(await output);
      assert.fail(
        `${what}: the run ended (exit ${r.code}) before the kill\n${r.stdout}${r.stderr}`,
      );
    }
    await new Promise((res) => setTimeout(res, 2));
  }
  child.kill("SIGKILL");
  const r = decode(await output);
  assert.equal((await child.status).signal, "SIGKILL", `${what}: not killed\n${r.stdout}`);
  return r;
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Every entry under `dir` (relative path → SHA-256 of a file's bytes, or "dir"). */
export async function snapshot(dir: string, prefix = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const names: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e);
  for (const e of names.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = `${prefix}${e.name}`;
    if (e.isDirectory) {
      out.set(rel, "dir");
      for (const [k, v] of await snapshot(`${dir}/${e.name}`, `${rel}/`)) out.set(k, v);
    } else out.set(rel, await sha256Hex(await Deno.readFile(`${dir}/${e.name}`)));
  }
  return out;
}

/** Copies a directory tree. */
export async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** Writes ~6 KB of varied UTF-8 text (ASCII and multi-byte characters) to `path`. */
export async function writeFixtureText(path: string): Promise<void> {
  await Deno.writeTextFile(
    path,
    Array.from(
      { length: 120 },
      (_, i) =>
        `line ${i}: the quick brown fox ${i % 7} jumps over ${
          ["the lazy dog", "ünïcödé", "λ-calculus", "日本語"][i % 4]
        }.`,
    ).join("\n"),
  );
}

/** One metrics.jsonl record, as the tests compare them. */
export interface Rec {
  /** Step. */
  step: number;
  /** Training loss. */
  loss?: number;
  /** Validation loss. */
  val_loss?: number;
  /** Max logit per layer. */
  max_logit?: number[];
  /** Expert loads. */
  expert_load?: number[][];
}

/** The records of `dir/metrics.jsonl`. */
export async function metrics(dir: string): Promise<Rec[]> {
  const text = await Deno.readTextFile(`${dir}/metrics.jsonl`);
  return text.trim().split("\n").map((l) => JSON.parse(l));
}
