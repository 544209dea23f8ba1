/**
 * Error raised by moongrad: always names the op and what was expected.
 *
 * @example Errors name the op and what was expected
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * try {
 *   mg.ones([2, 3]).matmul(mg.ones([2, 3]));
 * } catch (e) {
 *   console.log(e instanceof mg.MoongradError, (e as Error).message.startsWith("moongrad.matmul:")); // true true
 * }
 * ```
 */
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
