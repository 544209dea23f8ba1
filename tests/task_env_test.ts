/**
 * cli/task_env.ts, the tasks' environment defaults: XDG_RUNTIME_DIR for Mesa's EGL probe and
 * LP_NUM_THREADS for Mesa's CPU driver, each kept when the user set it.
 */
import assert from "node:assert/strict";
import { taskLpThreads, taskXdgRuntimeDir } from "../cli/task_env.ts";

Deno.test("task env: LP_NUM_THREADS is twice the CPU count (≤ 16) unless the user set it", () => {
  assert.equal(taskLpThreads(new Map(), 2, "linux"), "4");
  assert.equal(taskLpThreads(new Map(), 64, "linux"), "16");
  assert.equal(taskLpThreads(new Map([["LP_NUM_THREADS", "3"]]), 2, "linux"), "3");
  assert.equal(taskLpThreads(new Map(), 2, "darwin"), undefined);
  // This process ran with the preload: the variable is set before any adapter exists.
  if (Deno.build.os === "linux") assert.ok(Number(Deno.env.get("LP_NUM_THREADS")) >= 1);
});

Deno.test("task env: XDG_RUNTIME_DIR falls back to the temporary directory on Linux only", () => {
  assert.equal(taskXdgRuntimeDir(new Map([["TMPDIR", "/var/tmp"]]), "linux"), "/var/tmp");
  assert.equal(taskXdgRuntimeDir(new Map(), "linux"), "/tmp");
  assert.equal(taskXdgRuntimeDir(new Map([["XDG_RUNTIME_DIR", "/run/u"]]), "linux"), "/run/u");
  assert.equal(taskXdgRuntimeDir(new Map(), "windows"), undefined);
});
