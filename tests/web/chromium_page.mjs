/**
 * Chromium test of the live page: starts `cli/web.ts` on a free port, opens
 * `/web/?steps=N&autostart=1` in headless Debian Chromium (WebGPU on SwiftShader) through npm
 * `playwright-core` with a fresh profile, waits for `window.moongradDemo.done`, samples 40
 * bytes with the Generate button (`model.generate`, latent KV cache), and checks that the loss
 * fell, every step recorded a finite max attention logit, the sample has 40 bytes, and neither
 * the page nor the console reported an error. Saves `web/screenshot.png` and prints the page's
 * tokens/s.
 * Exits non-zero on failure. Env: MG_WEB_STEPS (default 20), CHROMIUM (default
 * /usr/bin/chromium), MG_WEB_TIMEOUT_S (default 480).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
// Dynamic imports: `deno check tests/` must not need tests/web/node_modules or dist/.
const { chromium } = await import("playwright-core");

const root = fileURLToPath(new URL("../../", import.meta.url));
const steps = Number(process.env.MG_WEB_STEPS ?? 20);
const timeoutMs = Number(process.env.MG_WEB_TIMEOUT_S ?? 480) * 1000;
const failures = [];
const check = (ok, what) => {
  console.log(`  ${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

/** Starts the static server; resolves with its base URL and process. */
function startServer() {
  const deno = process.env.DENO ?? "deno";
  const proc = spawn(deno, ["run", "--allow-all", "cli/web.ts", "--port", "0"], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    proc.on("exit", (code) => reject(new Error(`cli/web.ts exited with ${code}: ${out}`)));
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/moongrad web: (http:\/\/\S+)/);
      if (m) resolve({ url: m[1], proc });
    });
  });
}

const { url, proc } = await startServer();
const profile = mkdtempSync(join(tmpdir(), "moongrad-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1360, height: 1000 },
    deviceScaleFactor: 1,
    args: [
      "--no-sandbox",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--enable-unsafe-webgpu",
      "--enable-features=Vulkan",
    ],
  });
  const page = context.pages()[0] ?? await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
  const t0 = performance.now();
  await page.goto(`${url}?steps=${steps}&autostart=1`);
  await page.waitForFunction(
    () =>
      globalThis.moongradDemo && (globalThis.moongradDemo.done || globalThis.moongradDemo.error),
    null,
    { timeout: timeoutMs, polling: 500 },
  );
  const demo = await page.evaluate(() => globalThis.moongradDemo);
  const seconds = (performance.now() - t0) / 1000;
  // Sample 40 bytes with the latent KV cache (model.generate) from the trained model.
  const s0 = performance.now();
  await page.fill('#sample input[name="tokens"]', "40");
  await page.click("#generate");
  await page.waitForFunction(
    () => globalThis.moongradDemo.sample || globalThis.moongradDemo.error,
    null,
    { timeout: 120_000, polling: 250 },
  );
  const sample = await page.evaluate(() => globalThis.moongradDemo.sample);
  const sampleSeconds = (performance.now() - s0) / 1000;
  // Let the last frame paint before the screenshot.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50))));
  await page.screenshot({ path: join(root, "web/screenshot.png"), fullPage: true });

  const l = demo.losses;
  const head = l.slice(0, 3).reduce((a, b) => a + b, 0) / Math.max(1, Math.min(3, l.length));
  const tail = l.slice(-3).reduce((a, b) => a + b, 0) / Math.max(1, Math.min(3, l.length));
  // Steady-state throughput: the median step after the first (which compiles the pipelines).
  const tps = demo.tokensPerSecond.slice(1).sort((a, b) => a - b);
  const median = tps.length ? tps[Math.floor(tps.length / 2)] : NaN;
  console.log(
    `  adapter ${demo.adapter}; ${demo.step} steps in ${seconds.toFixed(1)} s; loss ${
      head.toFixed(3)
    } → ${tail.toFixed(3)}; val ${JSON.stringify(demo.valLosses.map((v) => +v[1].toFixed(3)))}; ` +
      `max logit ${Math.max(...demo.maxLogits).toFixed(2)}; median ${median.toFixed(1)} tokens/s`,
  );
  check(demo.error === null, `no page error (${demo.error})`);
  check(demo.done && demo.step === steps, `finished ${steps} steps (got ${demo.step})`);
  check(l.length === steps && l.every(Number.isFinite), "a finite loss per step");
  check(
    tail < head - 0.3,
    `the loss fell by more than 0.3 (${head.toFixed(3)} → ${tail.toFixed(3)})`,
  );
  check(
    demo.maxLogits.length === steps && demo.maxLogits.every((v) => Number.isFinite(v) && v > 0),
    "a positive finite max attention logit per step",
  );
  console.log(`  sample (${sampleSeconds.toFixed(1)} s): ${JSON.stringify(sample?.text)}`);
  check(sample?.bytes === 40, `generate() produced 40 bytes (got ${sample?.bytes})`);
  check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(" | ")})`);
} catch (e) {
  check(false, `the page ran: ${e.message}`);
} finally {
  await context?.close();
  proc.kill();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failures.length ? 1 : 0);
