/**
 * Seeded pseudo-random numbers on the CPU: mulberry32 (Tommy Ettinger's 32-bit generator). The
 * whole state is one u32, so a generator is checkpointed by saving `state` and resumed by
 * setting it. Each draw adds the Weyl constant 0x6d2b79f5 to the state and mixes it with two
 * xorshift-multiply rounds; the result /2³² is a float in [0, 1) with 32 random bits. Period
 * 2³²; a few ns per draw; not cryptographic. Used for sampling (KimiLM.generate), the CLI's
 * batch order and the tests' reference data, so the same seed gives the same sequence
 * everywhere.
 */

/**
 * A seeded mulberry32 generator whose whole state is the u32 `state` (save it to resume the
 * exact sequence).
 *
 * @example Checkpoint and resume a sequence
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const rng = new mg.Rng(42);
 * rng.next();
 * const saved = rng.state;
 * const a = [rng.next(), rng.int(10)];
 * rng.state = saved;
 * console.log([rng.next(), rng.int(10)].every((v, i) => v === a[i])); // true
 * ```
 */
export class Rng {
  /** The generator state (save it to resume the exact sequence). */
  state: number;

  /** Creates a generator from a seed (taken modulo 2³²). */
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/**
 * The function form of `Rng`: each call returns the next float in [0, 1) of the sequence of
 * `seed`.
 *
 * @example Two generators with one seed agree
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const f = mg.mulberry32(7), g = new mg.Rng(7);
 * console.log(f() === g.next() && f() === g.next()); // true
 * ```
 */
export function mulberry32(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}
