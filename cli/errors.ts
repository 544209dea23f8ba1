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

/**
 * Runs `main`, printing a CliError as `prog: error: message` (one line) and exiting with 2;
 * any other error is printed with its message (and stack when MOONGRAD_DEBUG is set), exit 1.
 */
export async function runMain(prog: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    if (e instanceof CliError) {
      console.error(`${prog}: error: ${e.message.replace(/\s*\n\s*/g, " ")}`);
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
    console.error(`${prog}: failed: ${debug ? err.stack : String(err?.message ?? err)}`);
    Deno.exit(EXIT_FAILURE);
  }
}
