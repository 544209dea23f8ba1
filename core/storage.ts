import { acquire, type GpuBuf, release } from "./pool.ts";

/** A GPU buffer shared by a tensor and its views, freed when the last reference goes. */
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
