/**
 * One validation for the tile-configuration setters (`setMatmulConfig`, `setAttentionConfig`):
 * both take a configuration or null (null restores the adapter default), return the previous
 * override or null, and reject a configuration that breaks a limit with one MoongradError that
 * names the setter, the configuration and every limit broken, before changing anything.
 */
import { MoongradError } from "../core/errors.ts";

/**
 * Validates a tile configuration the same way for matmul and attention: `next` must be an
 * object and break no limit; else a MoongradError naming the setter, the configuration and
 * every limit it breaks.
 */
export function checkTileConfig<C extends object>(
  op: string,
  next: C,
  problemsOf: (c: C) => string[],
): void {
  const problems = next !== null && typeof next === "object"
    ? problemsOf(next)
    : [`expected a tile configuration object or null, got ${next}`];
  if (problems.length) {
    throw new MoongradError(
      op,
      `invalid tile config ${JSON.stringify(next)}: ${problems.join("; ")}`,
    );
  }
}
