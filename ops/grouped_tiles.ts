/**
 * The row tiles of a grouped (Mixture-of-Experts) product, shared by the storage and texture
 * matmul kernels: expert e owns rows offsets[e]..offsets[e+1]−1, cut into tiles of BM rows
 * that never straddle two experts; tile t of the concatenated per-expert tile lists is found
 * by one pass over the E + 1 offsets (E reads, no search structure to build). A grid sized by
 * the upper bound ceil(M / BM) + E tiles leaves the surplus workgroups nothing to do.
 */

/**
 * WGSL of `find_tile(t) -> vec4<u32>(expert, first row, end row, found)` for tiles of `bm`
 * rows, reading the offsets from the `off` binding (u32) and the expert count from
 * `p_experts()`. `found` is 0 for a tile past the last one.
 *
 * @example The helper for 16-row tiles
 * ```ts
 * import { findTileWgsl } from "./grouped_tiles.ts";
 * console.log(findTileWgsl(16).includes("fn find_tile")); // true
 * ```
 */
export function findTileWgsl(bm: number): string {
  return `
// Row tile t of the concatenated per-expert tile lists: (expert, first row, end row, found).
fn find_tile(t: u32) -> vec4<u32> {
  var acc = 0u;
  var res = vec4<u32>(0u);
  for (var i = 0u; i < p_experts(); i++) {
    let lo = off[i];
    let hi = off[i + 1u];
    let nt = (hi - lo + ${bm - 1}u) / ${bm}u;
    if (res.w == 0u && t < acc + nt) { res = vec4<u32>(i, lo + (t - acc) * ${bm}u, hi, 1u); }
    acc += nt;
  }
  return res;
}`;
}
