/**
 * Subnormal f32 inputs: WebGPU lets an implementation flush them to zero (real GPUs and Dawn
 * on SwiftShader do, lavapipe keeps them). Either behaviour is accepted, per element, and
 * nothing else: a result that is neither the exact one nor the flushed one fails.
 */
import * as mg from "../mod.ts";
import { F32_MIN_NORMAL, gpu } from "./util.ts";

const TINY = [2 ** -149, -(2 ** -149), 2 ** -130, -(2 ** -127), 1.5 * 2 ** -140, 1, -2, 0];

function flushed(x: number): number {
  return Math.abs(x) < F32_MIN_NORMAL ? (x < 0 ? -0 : 0) : x;
}

/**
 * Accepts f(x), and f of the flushed input, each with or without its result flushed (zeros of
 * either sign are equal once flushed).
 */
function assertExactOrFlushed(
  got: ArrayLike<number>,
  f: (v: number) => number,
  what: string,
): void {
  for (let i = 0; i < TINY.length; i++) {
    const exact = Math.fround(f(TINY[i]));
    const fromFlushed = Math.fround(f(flushed(TINY[i])));
    // A value passed through untouched (relu of a negative subnormal, which an FTZ device sees
    // as −0) may keep its subnormal bits: it counts as its flushed value.
    const g = flushed(got[i]);
    const ok = [exact, flushed(exact), fromFlushed, flushed(fromFlushed)].some((e) =>
      Object.is(got[i], e) || g === e
    );
    if (!ok) throw new Error(`${what}[${i}]: got ${got[i]}, expected ${exact} or a flushed value`);
  }
}

Deno.test("subnormal inputs: neg, abs, relu, add and sum give the exact or the flushed value", async () => {
  await gpu();
  const x = mg.tensor(TINY);
  assertExactOrFlushed(await x.neg().data(), (v) => -v, "neg");
  assertExactOrFlushed(await x.abs().data(), Math.abs, "abs");
  assertExactOrFlushed(await x.relu().data(), (v) => Math.max(v, 0), "relu");
  assertExactOrFlushed(await x.add(x).data(), (v) => 2 * v, "add");
  const tinyOnly = mg.tensor(TINY.slice(0, 5));
  const s = await tinyOnly.sum().item();
  const exact = Math.fround(TINY.slice(0, 5).reduce((a, b) => a + b, 0));
  if (!(s === exact || s === 0 || Math.abs(s - exact) <= 2 ** -149 * 4)) {
    throw new Error(`sum of subnormals: got ${s}, expected ${exact} or a flushed partial sum`);
  }
  // Normal numbers next to subnormals are never disturbed.
  const normal = await mg.tensor([1, 2 ** -149, -2]).add(mg.tensor([1, 0, 0.5])).data();
  if (normal[0] !== 2 || normal[2] !== -1.5) throw new Error(`normals changed: ${normal}`);
});
