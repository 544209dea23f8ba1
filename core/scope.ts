import type { Tensor } from "./tensor.ts";

const scopes: Set<Tensor>[] = [];

/** Registers a new tensor with the innermost scope (called by the Tensor constructor). */
export function trackTensor(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Removes a tensor from every open scope (kept, returned, or disposed). */
export function untrackTensor(t: Tensor): void {
  for (const s of scopes) s.delete(t);
}

/** What a scope function may return: tensors inside arrays and plain objects are kept. */
export type ScopeResult = unknown;

/**
 * Runs `fn` and disposes every tensor created inside it except the ones it returns (found in
 * the returned value, arrays and plain objects included) and the ones marked with `keep()`.
 * Returned tensors move to the enclosing scope. `also` names more values to search the same
 * way once `fn` has returned, e.g. a collector array `fn` pushed into: the tensors found there
 * survive and move to the enclosing scope too.
 *
 * @example Free every intermediate of a step
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const w = mg.randn([8, 8], { seed: 0 });
 * const before = mg.memory().liveTensors;
 * const y = mg.scope(() => w.matmul(w).relu().sum(1)); // the matmul and relu results are freed
 * console.log(y.shape, mg.memory().liveTensors - before); // [8] 1
 * ```
 *
 * @example Keep what a nested call pushed into a collector
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const extras: mg.Tensor[] = [];
 * const y = mg.scope(() => {
 *   extras.push(mg.ones([2]).mul(3)); // survives: found in `also`
 *   return mg.ones([2]).add(1); // survives: returned
 * }, extras);
 * console.log(await y.toArray(), await extras[0].toArray()); // [2, 2] [3, 3]
 * ```
 */
export function scope<T>(fn: () => T, also?: unknown): T {
  const tracked = new Set<Tensor>();
  scopes.push(tracked);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of tracked) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of tracked) t.dispose();
    throw new Error("moongrad.scope: the function must be synchronous (it returned a Promise)");
  }
  const keep = new Set<Tensor>();
  const seen = new Set<unknown>();
  collect(result, keep, seen);
  collect(also, keep, seen);
  for (const t of tracked) {
    if (!keep.has(t)) t.dispose();
  }
  for (const t of keep) if (tracked.has(t)) trackTensor(t);
  return result;
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>): void {
  if (value === null || typeof value !== "object" || seen.has(value)) return;
  seen.add(value);
  if (isTensor(value)) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) {
    const vals = value instanceof Map ? value.values() : Object.values(value);
    for (const v of vals) collect(v, out, seen);
  }
}

function isTensor(v: object): v is Tensor {
  return "shape" in v && "strides" in v && typeof (v as Tensor).dispose === "function" &&
    "gradFn" in v;
}
