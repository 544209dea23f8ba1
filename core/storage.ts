import { acquire, type GpuBuf, release } from "./pool.ts";

/**
 * A GPU buffer shared by a tensor and its views, freed when the last reference goes.
 *
 * @example Views share one storage
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.arange(6).reshape([2, 3]);
 * const row = x.slice(0, 1, 2); // a view
 * const s: mg.Storage = x.storage();
 * console.log(row.storage() === s, s.byteLength); // true 24
 * ```
 */
export class Storage {
  /** The pooled buffer. */
  readonly buf: GpuBuf;
  /** Bytes requested for this storage (the buffer may be larger: a size class). */
  readonly byteLength: number;
  private refs = 1;

  /** Allocates storage of at least `byteLength` bytes from the pool, with one reference. */
  constructor(byteLength: number) {
    this.byteLength = byteLength;
    this.buf = acquire(byteLength);
  }

  /** Adds a reference (a new view or a tensor saved for backward). */
  retain(): this {
    this.refs++;
    return this;
  }

  /** Drops a reference; the last one returns the buffer to the pool. */
  releaseRef(): void {
    if (--this.refs === 0) release(this.buf);
  }
}
