/**
 * numpy (OpenBLAS on the CPU) as a bench peer: one persistent `python3` subprocess that builds
 * float32 operands from the bench's own values and times `a @ b` inside Python with
 * `time.perf_counter()`, so process start-up, pipes and JSON are never timed. Each iteration
 * of the harness asks Python for one timed product and reports Python's time (the harness
 * times the round trip; `numpyPeer().timeMs` gives the in-Python time, which the matmul bench
 * prints). Skips cleanly (a reason string) when python3 or numpy is missing or
 * MG_BENCH_PEERS excludes "numpy". Reports numpy's BLAS thread count (OpenBLAS threads =
 * OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the core count) so the ratio can be read.
 *
 * Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
 */

/** A live numpy peer. */
export interface NumpyPeer {
  /** numpy version and BLAS thread count, e.g. "numpy 2.1.3, 2 BLAS threads". */
  describe: string;
  /** Uploads float32 operands (`a`, `b`, shapes) and stores them under `key`. */
  load(
    key: string,
    a: Float32Array,
    aShape: number[],
    b: Float32Array,
    bShape: number[],
    transposeB: boolean,
  ): Promise<void>;
  /** Times `iters` products of the operands under `key` inside Python; ms per product each. */
  time(key: string, iters: number): Promise<number[]>;
  /** The product of the operands under `key`, as float32 values. */
  result(key: string): Promise<Float32Array>;
  /** Ends the subprocess. */
  close(): Promise<void>;
}

const SERVER = String.raw`
import sys, json, time, base64, os
import numpy as np
ops = {}
def threads():
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(k): return int(os.environ[k])
    try:
        from threadpoolctl import threadpool_info
        return max(i["num_threads"] for i in threadpool_info())
    except Exception:
        return len(os.sched_getaffinity(0))
print(json.dumps({"ok": True, "numpy": np.__version__, "threads": threads()}), flush=True)
for line in sys.stdin:
    r = json.loads(line)
    k = r.get("key")
    if r["op"] == "load":
        a = np.frombuffer(base64.b64decode(r["a"]), dtype=np.float32).reshape(r["aShape"]).copy()
        b = np.frombuffer(base64.b64decode(r["b"]), dtype=np.float32).reshape(r["bShape"]).copy()
        if r["transposeB"]: b = np.swapaxes(b, -1, -2)
        ops[k] = (a, b)
        out = {"ok": True}
    elif r["op"] == "time":
        a, b = ops[k]
        ts = []
        for _ in range(r["iters"]):
            t = time.perf_counter(); a @ b; ts.append((time.perf_counter() - t) * 1e3)
        out = {"ok": True, "ms": ts}
    elif r["op"] == "result":
        a, b = ops[k]
        out = {"ok": True, "c": base64.b64encode(np.ascontiguousarray(a @ b, dtype=np.float32).tobytes()).decode()}
    else:
        out = {"ok": False}
    print(json.dumps(out), flush=True)
`;

function b64(x: Float32Array): string {
  const u8 = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) {
    s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function unb64(s: string): Float32Array {
  const bin = atob(s);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return new Float32Array(u8.buffer);
}

let peer: Promise<NumpyPeer | string> | null = null;

/** Starts (once) the python3 + numpy peer; a string says why it is unavailable. */
export function numpyPeer(): Promise<NumpyPeer | string> {
  peer ??= start();
  return peer;
}

async function start(): Promise<NumpyPeer | string> {
  let wanted: string | undefined;
  try {
    wanted = Deno.env.get("MG_BENCH_PEERS");
  } catch {
    wanted = undefined;
  }
  if (wanted && wanted !== "all" && !wanted.split(",").map((s) => s.trim()).includes("numpy")) {
    return "disabled by MG_BENCH_PEERS";
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("python3", {
      args: ["-u", "-c", SERVER],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch (e) {
    return `python3 unavailable (${e instanceof Error ? e.message.split("\n")[0] : e})`;
  }
  const enc = new TextEncoder();
  const writer = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const readLine = async (): Promise<string | null> => {
    while (!buf.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) return null;
      buf += value;
    }
    const i = buf.indexOf("\n");
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return line;
  };
  // deno-lint-ignore no-explicit-any
  const ask = async (req: unknown): Promise<any> => {
    await writer.write(enc.encode(JSON.stringify(req) + "\n"));
    const line = await readLine();
    if (line === null) throw new Error("numpy peer exited");
    const r = JSON.parse(line);
    if (!r.ok) throw new Error(`numpy peer failed on ${JSON.stringify(req).slice(0, 60)}`);
    return r;
  };
  const hello = await readLine();
  if (hello === null) {
    await child.status;
    return "python3 has no numpy (import failed)";
  }
  const h = JSON.parse(hello);
  return {
    describe: `numpy ${h.numpy}, ${h.threads} BLAS thread${h.threads === 1 ? "" : "s"}`,
    async load(key, a, aShape, b, bShape, transposeB) {
      await ask({ op: "load", key, a: b64(a), aShape, b: b64(b), bShape, transposeB });
    },
    async time(key, iters) {
      return (await ask({ op: "time", key, iters })).ms;
    },
    async result(key) {
      return unb64((await ask({ op: "result", key })).c);
    },
    async close() {
      await writer.close();
      await child.status;
    },
  };
}
