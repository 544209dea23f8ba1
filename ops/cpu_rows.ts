/**
 * The CPU adapters' row rule, shared by the row kernels (softmax, cross-entropy, RMSNorm's
 * forward and backward, the reductions): from CPU_THREAD_ROWS rows, each row gets one thread
 * instead of a group of lanes reducing through workgroup memory. On llvmpipe (lavapipe) and
 * SwiftShader adjacent threads are one CPU thread's SIMD lanes, every storage access is a
 * per-lane loop however threads are laid out, and each barrier of a lane tree is a coroutine
 * switch; one thread per row needs none. A thread sums its row in order, so rows longer than
 * CPU_THREAD_MAX_N keep their lanes' shorter sums where accuracy depends on it. One-thread
 * kernels run CPU_THREAD_WG threads per workgroup: a CPU thread runs one workgroup at a time,
 * so small groups spread few rows over every core. Measured figures are with each kernel.
 */
import { deviceInfo } from "../core/device.ts";

/** CPU adapters give every row one thread from this many rows (enough for every CPU thread). */
export const CPU_THREAD_ROWS = 64;
/** The longest row a thread sums in order when the sum's accuracy matters. */
export const CPU_THREAD_MAX_N = 8192;
/** Threads per workgroup of a one-thread-per-row kernel on CPU adapters. */
export const CPU_THREAD_WG = 32;

/**
 * True on a CPU adapter for `rows` rows of `n` values that take one thread each: at least
 * CPU_THREAD_ROWS rows of at most `maxN` (CPU_THREAD_MAX_N unless the kernel's sum allows more).
 *
 * @example The rule for a 1024 × 1024 softmax (true on llvmpipe, false on a GPU)
 * ```ts
 * import * as mg from "../mod.ts";
 * import { cpuRowThreads } from "./cpu_rows.ts";
 * const info = await mg.init();
 * console.log(cpuRowThreads(1024, 1024) === info.isFallbackAdapter); // true
 * ```
 */
export function cpuRowThreads(rows: number, n: number, maxN = CPU_THREAD_MAX_N): boolean {
  return rows >= CPU_THREAD_ROWS && n <= maxN && deviceInfo().isFallbackAdapter;
}
