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

try {
  const dir = taskXdgRuntimeDir();
  if (dir !== undefined && !Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", dir);
} catch {
  // Without --allow-env nothing can be read or set; the messages stay, nothing else changes.
}
