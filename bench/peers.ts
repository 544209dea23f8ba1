/**
 * The peers every bench group is measured against, in the same process and on the same
 * adapter: TensorFlow.js with its WebGPU backend and jax-js on its WebGPU device. Both load
 * lazily; a peer that fails to load (or to run a case) is reported with the reason and left
 * out, and moongrad's case still runs.
 *
 * How each library waits for the GPU inside every timed iteration (the same idea for all
 * three: submit what was recorded, then wait until the queue has executed it; nothing is read
 * back, so no library pays for a readback the others skip):
 * - moongrad: `await mg.sync()` (flush + `queue.onSubmittedWorkDone()`).
 * - tfjs-webgpu: end the open compute pass, submit the command encoder, then
 *   `await device.queue.onSubmittedWorkDone()` (what its own `getBufferData` does, minus the
 *   copy). Calling `submitQueue()` alone leaves a pass open and corrupts later results.
 * - jax-js: `await jax.blockUntilReady(result)`; jax-js is lazy and this is the documented way
 *   to make it dispatch and finish the pending kernels (it submits them and maps a zero-byte
 *   staging copy).
 */
// Pinned peer versions are spelled inline (deno.json "imports" is not this file's to edit).
// deno-lint-ignore-file no-explicit-any no-import-prefix
export type Tfjs = typeof import("npm:@tensorflow/tfjs-core@4.22.0");
export type Jax = typeof import("npm:@jax-js/jax@0.1.25");

/** A loaded peer, or the reason it could not be loaded. */
export type Loaded<T> = { ok: true; lib: T; adapter: string } | { ok: false; why: string };

let tfPromise: Promise<Loaded<Tfjs>> | null = null;
let jaxPromise: Promise<Loaded<Jax>> | null = null;

/** Peers can be switched off with MG_BENCH_PEERS=none (or a comma list: "tfjs,jax"). */
function wanted(name: string): boolean {
  let v: string | undefined;
  try {
    v = Deno.env.get("MG_BENCH_PEERS");
  } catch {
    v = undefined;
  }
  if (v === undefined || v === "" || v === "all") return true;
  return v.split(",").map((s) => s.trim()).includes(name);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message.split("\n")[0] : String(e);
}

/** TensorFlow.js core + WebGPU backend 4.22.0, on `tf.setBackend("webgpu")`. */
export function loadTfjs(): Promise<Loaded<Tfjs>> {
  tfPromise ??= (async (): Promise<Loaded<Tfjs>> => {
    if (!wanted("tfjs")) return { ok: false, why: "disabled by MG_BENCH_PEERS" };
    try {
      const tf = await import("npm:@tensorflow/tfjs-core@4.22.0");
      await import("npm:@tensorflow/tfjs-backend-webgpu@4.22.0");
      // tfjs-core's node entry registers no gradients (its ESM-only register_all_gradients
      // does not load in Deno); the tfjs union package's node entry registers them all in
      // tfjs' global gradient registry, which tfjs-core reads. Used for the MLP step only.
      await import("npm:@tensorflow/tfjs@4.22.0");
      const ok = await tf.setBackend("webgpu");
      await tf.ready();
      if (!ok || tf.getBackend() !== "webgpu") {
        return { ok: false, why: `setBackend("webgpu") failed (backend is ${tf.getBackend()})` };
      }
      const be = tf.backend() as any;
      const info = be.adapterInfo ?? {};
      return { ok: true, lib: tf, adapter: String(info.description ?? info.vendor ?? "webgpu") };
    } catch (e) {
      return { ok: false, why: message(e) };
    }
  })();
  return tfPromise;
}

/** Waits until tfjs-webgpu has executed everything recorded so far (see the module doc). */
export async function tfSync(tf: Tfjs): Promise<void> {
  const be = tf.backend() as any;
  be.ensureCommandEncoderReady();
  be.endComputePassEncoder();
  be.submitQueue();
  await be.device.queue.onSubmittedWorkDone();
}

/** jax-js 0.1.25 with `init("webgpu")` and `defaultDevice("webgpu")`. */
export function loadJax(): Promise<Loaded<Jax>> {
  jaxPromise ??= (async (): Promise<Loaded<Jax>> => {
    if (!wanted("jax")) return { ok: false, why: "disabled by MG_BENCH_PEERS" };
    try {
      const jax = await import("npm:@jax-js/jax@0.1.25");
      const devices = await jax.init("webgpu");
      if (!devices.includes("webgpu")) {
        return { ok: false, why: `jax.init("webgpu") returned [${devices.join(", ")}]` };
      }
      jax.defaultDevice("webgpu");
      const dev = jax.getWebGPUDevice() as any;
      const info = dev?.adapterInfo ?? {};
      return { ok: true, lib: jax, adapter: String(info.description ?? "webgpu") };
    } catch (e) {
      return { ok: false, why: message(e) };
    }
  })();
  return jaxPromise;
}

/** Deterministic values in [-1, 1) (a small LCG; the same inputs for every library). */
export function values(n: number, seed: number): Float32Array<ArrayBuffer> {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}
