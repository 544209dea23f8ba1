/**
 * `deno task web [--port N] [--host H]`: serves the live training page. A small static server
 * (Deno.serve) for `web/` and the bundle in `dist/`, with `/` redirecting to `/web/`; it runs
 * `deno task build:web` first when the bundle is missing or older than a source file. Prints
 * `moongrad web: http://HOST:PORT/web/` once listening (`--port 0` picks a free port).
 */
import { parseFlags } from "./args.ts";
import { CliError, runMain } from "./errors.ts";

const root = new URL("../", import.meta.url).pathname;
const SERVED = ["web/", "dist/"];
const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  map: "application/json",
  json: "application/json",
  png: "image/png",
  svg: "image/svg+xml",
  ts: "text/plain; charset=utf-8",
};

async function mtime(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/** Newest modification time of the .ts files under `dirs`. */
async function newestSource(dirs: string[]): Promise<number> {
  let newest = await mtime(`${root}mod.ts`);
  const walk = async (dir: string): Promise<void> => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(`${dir}${e.name}/`);
      else if (e.name.endsWith(".ts")) newest = Math.max(newest, await mtime(`${dir}${e.name}`));
    }
  };
  for (const d of dirs) await walk(`${root}${d}`);
  return newest;
}

/** Builds dist/ when a bundle is missing or stale. */
async function ensureBundle(): Promise<void> {
  const built = Math.min(await mtime(`${root}dist/moongrad.js`), await mtime(`${root}dist/web.js`));
  const sources = await newestSource(["core/", "ops/", "nn/", "optim/", "io/", "web/", "cli/"]);
  if (built && built >= sources) return;
  console.log(`web: ${built ? "sources changed" : "no bundle yet"}; running build:web`);
  const p = await new Deno.Command(Deno.execPath(), {
    // deno.json turns the lockfile off (see README, "What a task downloads"); esbuild and
    // TypeScript are checked against deno.lock here.
    args: ["run", `--lock=${root}deno.lock`, "--allow-all", `${root}cli/build_web.ts`],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (p.code !== 0) throw new Error(`build:web failed (exit code ${p.code})`);
}

/** Answers one request from web/ or dist/. */
export async function serveFile(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/" || url.pathname === "/web") {
    return Response.redirect(new URL("/web/", url), 302);
  }
  let rel = decodeURIComponent(url.pathname).replace(/^\/+/, "");
  if (rel.endsWith("/") || rel === "") rel += "index.html";
  if (rel.split("/").includes("..") || !SERVED.some((d) => rel.startsWith(d))) {
    return new Response("not found\n", { status: 404 });
  }
  try {
    const body = await Deno.readFile(`${root}${rel}`);
    const ext = rel.slice(rel.lastIndexOf(".") + 1);
    return new Response(body, {
      headers: {
        "content-type": TYPES[ext] ?? "application/octet-stream",
        "cache-control": "no-cache",
      },
    });
  } catch {
    return new Response("not found\n", { status: 404 });
  }
}

if (import.meta.main) {
  await runMain("web", async () => {
    const { flags } = parseFlags(Deno.args, {
      port: { type: "string", arg: "N", default: "8000", help: "port (0: any free port)" },
      host: { type: "string", arg: "H", default: "127.0.0.1", help: "address to listen on" },
    });
    const port = Number(flags.port ?? 8000);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new CliError(`--port must be an integer from 0 to 65535, got ${flags.port}`);
    }
    await ensureBundle();
    Deno.serve({
      port,
      hostname: String(flags.host ?? "127.0.0.1"),
      onListen: (a) => console.log(`moongrad web: http://${a.hostname}:${a.port}/web/`),
    }, serveFile);
  });
}
