/**
 * Command-line errors: a `CliError` is bad input (a flag, a file, a run directory) reported as
 * one line on stderr with exit code 2; anything else is a failure (exit code 1).
 */

/** Bad input from the user: printed as one line, exit code 2. */
export class CliError extends Error {
  /** Creates the error with the one-line message the user sees. */
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** Exit code for bad input. */
export const EXIT_USAGE = 2;
/** Exit code for a failure while running. */
export const EXIT_FAILURE = 1;

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Prints `e` the way runMain does and exits: a CliError as `prog: error: message` (exit 2),
 * anything else as `prog: failed: message` (exit 1); one line either way, with the stack only
 * when MOONGRAD_DEBUG is set.
 */
export function exitWithError(prog: string, e: unknown): never {
  if (e instanceof CliError) {
    console.error(`${prog}: error: ${oneLine(e.message)}`);
    Deno.exit(EXIT_USAGE);
  }
  const err = e as Error;
  const debug = (() => {
    try {
      return Deno.env.get("MOONGRAD_DEBUG");
    } catch {
      return undefined;
    }
  })();
  const message = err instanceof Error ? err.message : String(err);
  console.error(`${prog}: failed: ${debug && err?.stack ? err.stack : oneLine(message)}`);
  Deno.exit(EXIT_FAILURE);
}

/**
 * Runs `main`, printing a CliError as `prog: error: message` (one line) and exiting with 2;
 * any other error, also one thrown later outside `main` (an unhandled rejection), is printed
 * as one line with its message (and stack when MOONGRAD_DEBUG is set), exit 1.
 */
export async function runMain(prog: string, main: () => Promise<void>): Promise<void> {
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    exitWithError(prog, ev.reason);
  });
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    exitWithError(prog, ev.error ?? ev.message);
  });
  try {
    await main();
  } catch (e) {
    exitWithError(prog, e);
  }
}
