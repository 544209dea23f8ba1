/**
 * `deno task test:web [NAME…]`: the browser/Node tests of the bundle. Builds `dist/`
 * (cli/build_web.ts), installs this directory's npm packages when package-lock.json changed
 * (`npm ci`, into tests/web/node_modules only), then runs each test as a Node script: the
 * bundle's matmul under Node on Dawn (npm `webgpu`, SwiftShader), the type declarations under
 * `tsc`, and the live page training in headless Chromium. Prints PASS/FAIL per test and
 * `web tests: N passed, N failed`; exits 1 when any failed. NAME filters tests by substring.
 */
const here = new URL("./", import.meta.url).pathname;
const root = new URL("../../", import.meta.url).pathname;
const SWIFTSHADER = "/usr/lib/chromium/vk_swiftshader_icd.json";

interface WebTest {
  name: string;
  cmd: string[];
  env?: Record<string, string>;
  timeoutS: number;
}

const TESTS: WebTest[] = [
  {
    name: "build: dist/moongrad.js, dist/web.js and declarations",
    cmd: [
      Deno.execPath(),
      "run",
      `--lock=${root}deno.lock`,
      "--allow-all",
      `${root}cli/build_web.ts`,
    ],
    timeoutS: 300,
  },
  {
    name: "node: the bundle's matmul and gradient on Dawn match the CPU",
    cmd: ["node", `${here}node_bundle.mjs`],
    env: { VK_ICD_FILENAMES: Deno.env.get("VK_ICD_FILENAMES") ?? SWIFTSHADER },
    timeoutS: 120,
  },
  {
    name: "types: dist/moongrad.d.ts compiles for a strict TypeScript consumer",
    cmd: ["node", `${here}declarations.mjs`],
    timeoutS: 120,
  },
  {
    name: "chromium: the live page trains (?steps=20&autostart=1)",
    cmd: ["node", `${here}chromium_page.mjs`],
    env: { DENO: Deno.execPath() },
    timeoutS: 600,
  },
];

async function sha256(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `npm ci` into tests/web when node_modules is missing or was installed from another lock. */
async function installNodePackages(): Promise<void> {
  const stamp = `${here}node_modules/.moongrad-lock-sha256`;
  const want = await sha256(`${here}package-lock.json`);
  const have = await Deno.readTextFile(stamp).catch(() => "");
  if (have === want) return;
  console.log("test:web: npm ci (webgpu, playwright-core, typescript, @webgpu/types)");
  const p = await new Deno.Command("npm", {
    args: ["ci", "--ignore-scripts", "--no-audit", "--no-fund"],
    cwd: here,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (p.code !== 0) throw new Error(`npm ci in ${here} failed (exit code ${p.code})`);
  await Deno.writeTextFile(stamp, want);
}

async function run(t: WebTest): Promise<boolean> {
  const child = new Deno.Command(t.cmd[0], {
    args: t.cmd.slice(1),
    cwd: root,
    env: { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp", ...t.env },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => {
    console.log(`  timed out after ${t.timeoutS} s`);
    child.kill("SIGKILL");
  }, t.timeoutS * 1000);
  const status = await child.status;
  clearTimeout(timer);
  return status.success;
}

const filters = Deno.args;
// The build always runs: the other tests use its output.
const selected = TESTS.filter((t, i) =>
  i === 0 || !filters.length || filters.some((f) => t.name.includes(f))
);
let passed = 0, failed = 0;
try {
  await installNodePackages();
} catch (e) {
  console.log(`FAIL npm packages: ${(e as Error).message}`);
  failed++;
}
for (const t of failed ? [] : selected) {
  console.log(`--- ${t.name}`);
  const t0 = performance.now();
  const ok = await run(t);
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(`${ok ? "PASS" : "FAIL"} ${t.name} (${secs} s)`);
  if (ok) passed++;
  else failed++;
}
console.log(`web tests: ${passed} passed, ${failed} failed`);
Deno.exit(failed ? 1 : 0);
