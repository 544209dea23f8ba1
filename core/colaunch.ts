/**
 * Co-launch: two independent dispatches of pairable kernels recorded as ONE dispatch.
 *
 * The runtime (core/runtime.ts) holds back a dispatch of a kernel defined `pairable`; when the
 * next dispatch is pairable too and independent of it, both run in one launch of a merged
 * kernel, otherwise the held one is recorded as it was. The merged module holds each kernel's
 * body as a function (`cl_job0`, `cl_job1`) with the entry point's builtins as arguments;
 * workgroups 0 … n₀−1 of the merged grid run the first job and the next n₁ the second, each
 * seeing the workgroup ids, workgroup counts and global ids of its own launch. Every output
 * element is therefore computed by exactly the code of its own launch: results are those of
 * the two launches.
 *
 * The second job's names are renamed (suffix `_c1`): its bindings, its prelude's functions,
 * constants and private variables, and its parameter accessors. Both parameter blocks are
 * re-laid out with their arrays cut to the words the launch uses (core/params.ts
 * `compactParams`), the second after the first, then the grid words. Workgroup variables the two preludes declare identically are
 * shared (a workgroup runs one job), others are renamed and count against the device's
 * workgroup storage. A buffer both jobs only read, as the same sub-buffer, is bound once.
 *
 * Independent means: no byte range one job writes overlaps a range the other binds (every
 * binding is read_write in the module, and overlapping writable ranges in one dispatch are a
 * validation error on Dawn besides being a race). Also required: the same workgroup size,
 * both compacted parameter blocks plus the grid words in 63 words, the storage-buffer bindings within
 * `maxStorageBuffersPerShaderStage`, and preludes without structs (member names are not
 * renamed). Otherwise the dispatches run one after the other, unchanged.
 *
 * Cost: one `if` on the workgroup index per workgroup and a few parameter reads; a merged
 * kernel compiles once per pair of kernels (and pattern of shared bindings).
 */
import type { Binding, Kernel, KernelDef } from "./kernel.ts";
import { kernel, PARAM_ZERO_WORD, WIDE_PARAM_WORDS } from "./kernel.ts";
import { type CompactParams, compactParams, wordAccessors } from "./params.ts";
import type { GpuBuf } from "./pool.ts";
import type { GpuTex } from "./textures.ts";

/** One dispatch as the runtime records it. */
export interface Launch {
  /** The kernel. */
  k: Kernel;
  /** Its storage buffers (and textures), in binding order. */
  bufs: readonly (GpuBuf | GpuTex)[];
  /** Its 64-word parameter block. */
  params: Uint32Array;
  /** Workgroups per dimension. */
  groups: readonly [number, number, number];
}

/** Device limits a merge must respect. */
export interface CoLaunchLimits {
  /** `maxStorageBuffersPerShaderStage`. */
  storageBuffers: number;
  /** `maxComputeWorkgroupStorageSize` (bytes). */
  workgroupBytes: number;
  /** `maxComputeWorkgroupsPerDimension`. */
  groupsPerDimension: number;
}

/** Words after both parameter blocks: n₀, n₁, and each job's grid width and height. */
const GRID_NAMES = ["cl_n0", "cl_n1", "cl_gx0", "cl_gy0", "cl_gx1", "cl_gy1"];
const GRID_WORDS = GRID_NAMES.length;
const SUFFIX = "_c1";
const merged = new Map<string, Kernel | null>();

/**
 * The one launch that runs `x` then-or-alongside `y` (they are independent), or null when the
 * two cannot share one.
 *
 * @example Two independent launches become one (internal; the runtime calls it)
 * ```ts
 * import * as mg from "../mod.ts";
 * import { runtimeStats, setCoLaunch } from "./runtime.ts";
 * await mg.init();
 * setCoLaunch(true); // the default is off on CPU adapters
 * const a = mg.randn([64, 64], { seed: 0 }), b = mg.randn([64, 64], { seed: 1 });
 * const before = runtimeStats().dispatches;
 * const [p, q] = [a.matmul(b), b.matmul(a)]; // independent: one launch
 * console.log(runtimeStats().dispatches - before); // 1
 * ```
 */
export function coLaunch(x: Launch, y: Launch, limits: CoLaunchLimits): Launch | null {
  const dx = x.k.def, dy = y.k.def;
  if (!dx || !dy) return null;
  // Shared bindings: the same sub-buffer both only read; any other overlap is a dependency.
  const shared: number[] = y.bufs.map(() => -1);
  // Kernels with texture bindings are not pairable; only buffers reach here.
  const [xb, yb] = [x.bufs as readonly GpuBuf[], y.bufs as readonly GpuBuf[]];
  for (let j = 0; j < yb.length; j++) {
    const b = yb[j];
    for (let i = 0; i < xb.length; i++) {
      const a = xb[i];
      if (a.buffer !== b.buffer || a.offset >= b.offset + b.size || b.offset >= a.offset + a.size) {
        continue;
      }
      const reads = x.k.access[i] === "read" && y.k.access[j] === "read";
      // One binding serves both only when both declare it alike (a vec4<f32> job must not
      // read through an f32 declaration).
      const [bx, by] = [dx.bindings[i], dy.bindings[j]];
      if (!reads || a !== b || bx.type !== by.type || bx.kind !== by.kind) return null;
      shared[j] = i;
    }
  }
  const n0 = x.groups[0] * x.groups[1] * x.groups[2];
  const n1 = y.groups[0] * y.groups[1] * y.groups[2];
  const total = n0 + n1;
  const gx = Math.min(total, limits.groupsPerDimension);
  const gy = Math.ceil(total / gx);
  if (gy > limits.groupsPerDimension) return null;
  const none: CompactParams = { wgsl: "", words: [], key: "" };
  const cx = dx.params ? compactParams(dx.params, x.params, 0, "") : none;
  if (!cx) return null;
  // Layout: x's words, then y's and the grid words in the 63-word block when they fit, else a
  // wide block with the grid words and y's after the zero word.
  const w0 = cx.words.length;
  const narrow = dy.params ? compactParams(dy.params, y.params, w0, SUFFIX) : none;
  if (!narrow) return null;
  const wide = w0 + narrow.words.length + GRID_WORDS > PARAM_ZERO_WORD;
  const gridAt = wide ? PARAM_ZERO_WORD + 1 : w0 + narrow.words.length;
  const cy = wide ? compactParams(dy.params!, y.params, gridAt + GRID_WORDS, SUFFIX)! : narrow;
  const yAt = wide ? gridAt + GRID_WORDS : w0;
  if (yAt + cy.words.length >= WIDE_PARAM_WORDS) return null;
  const key = `${x.k.id}|${y.k.id}|${shared.join(",")}|${cx.key}|${cy.key}`;
  let k = merged.get(key);
  if (k === undefined) {
    const def = mergeDefs(dx, dy, shared, [cx.wgsl, cy.wgsl, gridAt, wide], limits);
    k = def ? kernel(def) : null;
    merged.set(key, k);
  }
  if (!k || k.failure) return null;
  const params = new Uint32Array(wide ? WIDE_PARAM_WORDS : PARAM_ZERO_WORD + 1);
  params.set(cx.words, 0);
  params.set(cy.words, yAt);
  params.set([n0, n1, x.groups[0], x.groups[1], y.groups[0], y.groups[1]], gridAt);
  const bufs = [...x.bufs, ...y.bufs.filter((_, j) => shared[j] < 0)];
  return { k, bufs, params, groups: [gx, gy, 1] };
}

/** The merged kernel's definition, or null when the two cannot be merged. */
function mergeDefs(
  dx: KernelDef,
  dy: KernelDef,
  shared: number[],
  [wgslX, wgslY, gridAt, wide]: [string, string, number, boolean],
  limits: CoLaunchLimits,
): KernelDef | null {
  const size = (
    d: KernelDef,
  ) => [d.workgroupSize[0], d.workgroupSize[1] ?? 1, d.workgroupSize[2] ?? 1];
  const [wx, wy, wz] = size(dx);
  if (size(dy).join() !== [wx, wy, wz].join()) return null;
  const bindingCount = dx.bindings.length + shared.filter((s) => s < 0).length;
  if (bindingCount > limits.storageBuffers) return null;
  const px = dx.prelude ?? "", py = dy.prelude ?? "";
  if (/\bstruct\b/.test(px + py)) return null;
  // Workgroup variables: shared when declared identically, else renamed (and both counted).
  const wgX = workgroupVars(px), wgY = workgroupVars(py);
  if (!wgX || !wgY) return null;
  const sharedVars = new Set(
    [...wgY].filter(([n, t]) => wgX.get(n) === t).map(([n]) => n),
  );
  let bytes = 0;
  for (const t of wgX.values()) bytes += byteSize(t) ?? Infinity;
  for (const [n, t] of wgY) if (!sharedVars.has(n)) bytes += byteSize(t) ?? Infinity;
  if (bytes > limits.workgroupBytes) return null;
  // The second job's renames: bindings (to the first's where shared), prelude declarations.
  const rename = new Map<string, string>();
  dy.bindings.forEach((b, j) => {
    rename.set(b.name, shared[j] >= 0 ? dx.bindings[shared[j]].name : `${b.name}${SUFFIX}`);
  });
  for (
    const m of py.matchAll(/\b(?:fn|const|var<private>|var<workgroup>|override|alias)\s+(\w+)/g)
  ) {
    if (!sharedVars.has(m[1])) rename.set(m[1], `${m[1]}${SUFFIX}`);
  }
  // Names the first job or the merged module use must not be taken by a renamed one, and a
  // shared binding's name (the first job's) must not already name something in the second.
  const taken = dx.body + px + wgslX;
  for (const to of rename.values()) if (to.endsWith(SUFFIX) && taken.includes(to)) return null;
  const yText = dy.body + py;
  for (const [from, to] of rename) {
    // (Unless the second job's own `to` is itself renamed away, e.g. its binding of that name.)
    const free = rename.has(to) && rename.get(to) !== to;
    if (
      !free && !to.endsWith(SUFFIX) && from !== to && new RegExp(`(?<![.\\w])${to}\\b`).test(yText)
    ) {
      return null;
    }
  }
  const own = (text: string) =>
    text
      .replace(/(?<![.\w])[A-Za-z_]\w*/g, (id) => rename.get(id) ?? id)
      .replace(/\bp_(\w+)\(/g, `p_$1${SUFFIX}(`);
  // Shared workgroup variables are declared once, by the first job's prelude.
  const pyOwn = own(dropWorkgroupVars(py, sharedVars));
  const args = "gid: vec3<u32>, lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>, lidx: u32";
  const bindings: Binding[] = [
    ...dx.bindings,
    ...dy.bindings.flatMap((
      b,
      j,
    ) => (shared[j] >= 0 ? [] : [{ ...b, name: `${b.name}${SUFFIX}` }])),
  ];
  const jobCall = (j: number, base: string) => `
    let l = lin - ${base};
    let gx = p_cl_gx${j}();
    let gy = p_cl_gy${j}();
    let n = p_cl_n${j}();
    let vw = vec3<u32>(l % gx, (l / gx) % gy, l / (gx * gy));
    cl_job${j}(vw * vec3<u32>(${wx}u, ${wy}u, ${wz}u) + lid, lid, vw, vec3<u32>(gx, gy, n / (gx * gy)), lidx);`;
  return {
    name: `${dx.name}+${dy.name}`,
    bindings,
    workgroupSize: [wx, wy, wz],
    ...(wide ? { paramWords: WIDE_PARAM_WORDS } : {}),
    params: {
      kernel: `${dx.name}+${dy.name}`,
      words: gridAt + GRID_WORDS,
      wgsl: [
        wgslX,
        wgslY,
        wordAccessors(GRID_NAMES, gridAt),
      ].join("\n"),
    },
    prelude: [
      px,
      pyOwn,
      `fn cl_job0(${args}) {\n${dx.body}\n}`,
      `fn cl_job1(${args}) {\n${own(dy.body)}\n}`,
    ].join("\n"),
    body: `
  let lin = (wid.z * nwg.y + wid.y) * nwg.x + wid.x;
  let n0 = p_cl_n0();
  if (lin < n0) {${jobCall(0, "0u")}
  } else if (lin < n0 + p_cl_n1()) {${jobCall(1, "n0")}
  }`,
  };
}

/** Workgroup variables of a prelude, name → type text; null when one cannot be read. */
function workgroupVars(prelude: string): Map<string, string> | null {
  const vars = new Map<string, string>();
  const decl = /var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g;
  for (const m of prelude.matchAll(decl)) vars.set(m[1], m[2].replace(/\s+/g, ""));
  const count = prelude.match(/var<workgroup>/g)?.length ?? 0;
  return count === vars.size ? vars : null;
}

/** A prelude without the declarations of the named workgroup variables. */
function dropWorkgroupVars(prelude: string, names: Set<string>): string {
  return prelude.replace(
    /var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g,
    (all, name: string) => (names.has(name) ? "" : all),
  );
}

/** Bytes of a WGSL type (scalars, vectors, atomics and fixed arrays of them); null if unknown. */
function byteSize(type: string): number | null {
  const scalar: Record<string, number> = { f32: 4, u32: 4, i32: 4, f16: 2 };
  if (type in scalar) return scalar[type];
  let m = type.match(/^atomic<(u32|i32)>$/);
  if (m) return 4;
  m = type.match(/^vec([234])<(\w+)>$/);
  if (m) return (m[1] === "3" ? 4 : Number(m[1])) * (scalar[m[2]] ?? NaN) || null;
  m = type.match(/^array<(.+),(\d+)u?>$/);
  if (m) {
    const el = byteSize(m[1]);
    return el === null ? null : el * Number(m[2]);
  }
  return null;
}
