import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { extname, join, normalize } from "node:path";

const root = fileURLToPath(new URL("..", import.meta.url));

Deno.test("mod.ts imports from a plain http URL and runs a matmul (no bare or npm specifiers)", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = normalize(decodeURIComponent(new URL(req.url).pathname));
    if (path.includes("..")) return new Response("forbidden", { status: 403 });
    try {
      const body = await Deno.readFile(join(root, path));
      const type = extname(path) === ".ts" ? "application/typescript" : "text/plain";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const host = `127.0.0.1:${server.addr.port}`;
    const code = `import * as mg from "http://${host}/mod.ts";
await mg.init();
const a = mg.tensor([[1, 2], [3, 4]]);
const b = mg.tensor([[5, 6], [7, 8]]);
console.log(JSON.stringify(await a.matmul(b).toArray()));`;
    const dir = await Deno.makeTempDir();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", `--allow-import=${host}`, "--no-config", "--no-lock", "-"],
      env: { DENO_DIR: dir, XDG_RUNTIME_DIR: "/tmp", DENO_NO_UPDATE_CHECK: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      cwd: dir,
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(new TextEncoder().encode(code));
    await w.close();
    const res = await out.output();
    const stdout = new TextDecoder().decode(res.stdout).trim();
    const stderr = new TextDecoder().decode(res.stderr);
    await Deno.remove(dir, { recursive: true });
    assert.equal(res.code, 0, stderr);
    assert.equal(stdout.split("\n").pop(), "[[19,22],[43,50]]");
  } finally {
    await server.shutdown();
  }
});
