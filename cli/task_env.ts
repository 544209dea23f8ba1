/**
 * Environment defaults for the GPU tasks, loaded with `--preload cli/task_env.ts` by every
 * `deno task` that touches WebGPU (train, demo, sample, test, bench, ...) before any module
 * of the task runs.
 *
 * On Linux, Mesa's EGL driver (which Deno's wgpu probes while it lists adapters) asks
 * libwayland-client for a Wayland display, and libwayland prints
 * `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` to stderr whenever that
 * variable is unset, twice per process, although nothing is wrong: no display is needed and
 * the adapter is found as usual. When XDG_RUNTIME_DIR is unset or empty, this sets it to the
 * temporary directory (`TMPDIR`, else `/tmp`), where no Wayland socket lives, so the probe
 * fails quietly; child processes (the tests spawn `deno run`) inherit it. A value the user
 * set is kept as it is, so any message about it is a real one. Other systems are untouched.
 *
 * Mesa's llvmpipe/lavapipe (the CPU adapter when there is no GPU) runs compute work on
 * LP_NUM_THREADS threads, one per CPU by default. On the 2-core CI machine twice as many
 * measured faster: the tiny-K2 AdamW training step (batch 4 × 64) 145–153 ms with 4 threads
 * (8 runs of 10) against 162–187 ms with 2, 163–170 with 3 and 162–165 with 6 (medians of 40
 * steps, runs interleaved, 2026-12-03), and a 1024³ matmul 72–73 against 78–80 ms. So when the variable is
 * unset it is set to twice the CPU count (at most 16), before any adapter is requested; a value
 * the user set is kept. Only Mesa's CPU driver reads it.
 */

/** The XDG_RUNTIME_DIR the tasks use: the user's own when set, else the temporary directory. */
export function taskXdgRuntimeDir(
  env: { get(key: string): string | undefined } = Deno.env,
  os: string = Deno.build.os,
): string | undefined {
  const own = env.get("XDG_RUNTIME_DIR");
  if (own || os !== "linux") return own || undefined;
  const tmp = env.get("TMPDIR");
  return tmp && tmp.startsWith("/") ? tmp : "/tmp";
}

/**
 * The LP_NUM_THREADS the tasks use: the user's own when set, else twice the CPU count (at most
 * 16) on Linux, where Mesa's CPU driver runs; undefined elsewhere.
 *
 * @example
 * ```ts
 * import { taskLpThreads } from "./task_env.ts";
 * console.log(taskLpThreads(new Map(), 2, "linux")); // "4"
 * ```
 */
export function taskLpThreads(
  env: { get(key: string): string | undefined } = Deno.env,
  cpus: number = navigator.hardwareConcurrency,
  os: string = Deno.build.os,
): string | undefined {
  const own = env.get("LP_NUM_THREADS");
  if (own || os !== "linux") return own || undefined;
  return String(Math.min(16, 2 * Math.max(1, cpus || 1)));
}

try {
  const threads = taskLpThreads();
  if (threads !== undefined && !Deno.env.get("LP_NUM_THREADS")) {
    Deno.env.set("LP_NUM_THREADS", threads);
  }
} catch {
  // Without --allow-env the driver keeps its default.
}

try {
  const dir = taskXdgRuntimeDir();
  if (dir !== undefined && !Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", dir);
} catch {
  // Without --allow-env nothing can be read or set; the messages stay, nothing else changes.
}
