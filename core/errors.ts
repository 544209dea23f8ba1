/** Error raised by moongrad: always names the op and what was expected. */
export class MoongradError extends Error {
  /** Creates an error for `op` with a message that says what was wrong and what was expected. */
  constructor(op: string, message: string) {
    super(`moongrad.${op}: ${message}`);
    this.name = "MoongradError";
  }
}

/** Formats a shape the way error messages print it: `[2, 3]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
