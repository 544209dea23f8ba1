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
