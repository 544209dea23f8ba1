/** Workgroup counts for `n` threads in workgroups of `size`, spilling into y past 65535. */
export function grid1d(n: number, size: number): [number, number] {
  const groups = Math.max(1, Math.ceil(n / size));
  if (groups <= 65535) return [groups, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}

/** WGSL expression of the linear thread id for a `grid1d` dispatch with workgroup `size`. */
export function linearId(size: number): string {
  return `((wid.y * nwg.x + wid.x) * ${size}u + lid.x)`;
}

/**
 * Columns of one row a thread of a copy-like kernel handles: 4 when the row length allows, else
 * 2, else 1. On a CPU adapter a thread's index arithmetic and parameter reads cost more than the
 * copy itself (bench/RESULTS.md, stop 21), so they are paid once per group.
 *
 * @example
 * ```ts
 * import { columnsPerThread } from "./grid.ts";
 * console.log(columnsPerThread(128), columnsPerThread(6), columnsPerThread(7)); // 4 2 1
 * ```
 */
export function columnsPerThread(rowLength: number): number {
  return rowLength % 4 === 0 ? 4 : rowLength % 2 === 0 ? 2 : 1;
}
