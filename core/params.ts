/**
 * Declarative kernel parameters: one declaration per kernel names each parameter and its type
 * (u32, i32, f32, or a fixed-length array of one of them) and yields both sides of the
 * uniform block — WGSL accessors by name (`p_rows()`, `p_eps()`, `p_shape(i)`) that
 * core/kernel.ts places in the kernel source, and a host packer that checks every value and
 * writes its bits at the declared word.
 *
 * Words are laid out in declaration order in the 64-word block of core/kernel.ts; word 63
 * (PARAM_ZERO_WORD) is reserved and always 0, and every accessor reads through it
 * (`param_word(i)` reads word `i + params[63]`), so no parameter read is a uniform load at a
 * constant offset and Mesa's lavapipe cannot inline uniforms (the comment on PARAM_ZERO_WORD
 * has the measurements). A declaration over 63 words is an error where it is made. Arrays take
 * a run-time index; it is clamped to the array (one `min` per read) so an accessor only ever
 * reads its own words. Values stay run-time: shapes never change the source text.
 *
 * Cost: packing walks the declaration once per dispatch (a 64-word Uint32Array and one check
 * per value). Measured on this machine's V8 (2 shared cores): 0.66 µs for SGD's 10 scalars,
 * 1.4 µs for matmul's 15 scalars and three 16-word arrays — small next to a dispatch. Each
 * WGSL read costs one extra uniform load and an add (through the zero word), plus a `min`
 * per array read; kernels read parameters where they did before.
 */
import { MoongradError } from "./errors.ts";
import { PARAM_WORDS, PARAM_ZERO_WORD } from "./kernel.ts";

/** Words of the uniform block a declaration may use: all but the reserved zero word (63). */
export const PARAM_USABLE_WORDS = PARAM_ZERO_WORD;

/** The element type of one parameter. */
export type ParamKind = "u32" | "i32" | "f32";

/** One declared parameter: a scalar kind, or `[kind, length]` for a fixed-length array. */
export type ParamDecl = ParamKind | readonly [ParamKind, number];

/** A kernel's parameter declaration: name → kind or `[kind, length]`, in word order. */
export type ParamDecls = Readonly<Record<string, ParamDecl>>;

/**
 * The host values of a declaration: a number per scalar (u32 also takes a boolean, as 1/0)
 * and up to `length` numbers per array (the rest are 0).
 */
export type ParamValues<D extends ParamDecls> = {
  [K in keyof D]: D[K] extends readonly [ParamKind, number] ? ArrayLike<number>
    : D[K] extends "u32" ? number | boolean
    : number;
};

/** What core/kernel.ts needs of a declaration to generate the kernel's accessors. */
export interface ParamLayout {
  /** Kernel name the declaration belongs to (in error messages). */
  readonly kernel: string;
  /** Words the declaration uses (≤ 63). */
  readonly words: number;
  /** WGSL accessor functions, one per parameter, reading through `param_word`. */
  readonly wgsl: string;
  /** The parameters in word order (declarations made with `params` have them). */
  readonly entries?: readonly ParamEntry[];
}

/** One declared parameter of a layout. */
export interface ParamEntry {
  /** Name (the accessor is `p_name`). */
  readonly name: string;
  /** Element type. */
  readonly kind: ParamKind;
  /** First word. */
  readonly offset: number;
  /** Array length; 0 for a scalar. */
  readonly length: number;
}

/** A kernel's parameter block: its WGSL accessors and the packer of its host values. */
export interface ParamBlock<D extends ParamDecls> extends ParamLayout {
  /** The declaration. */
  readonly decls: D;
  /** First word of each parameter. */
  readonly offsets: { readonly [K in keyof D]: number };
  /**
   * Packs one value per declared parameter into the 64-word block (word 63 stays 0); throws a
   * MoongradError naming the kernel and parameter for a missing, non-integer (u32/i32),
   * out-of-range or too-long value.
   */
  pack(values: ParamValues<D>): Uint32Array;
}

type Entry = ParamEntry;

const NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
const F32 = new Float32Array(1);
const F32_BITS = new Uint32Array(F32.buffer);

/** The WGSL of one accessor: `p_name()` for a scalar, `p_name(i)` for an array. */
function accessor(e: Entry): string {
  const read = (at: string) =>
    e.kind === "u32" ? `param_word(${at})` : `bitcast<${e.kind}>(param_word(${at}))`;
  return e.length === 0
    ? `fn p_${e.name}() -> ${e.kind} { return ${read(`${e.offset}u`)}; }`
    : `fn p_${e.name}(i: u32) -> ${e.kind} { return ${
      read(`${e.offset}u + min(i, ${e.length - 1}u)`)
    }; }`;
}

/**
 * Declares a kernel's parameters. Names must be WGSL-friendly (`rows`, `inStrides`); arrays
 * have a fixed length ≥ 1; the total must fit in 63 words.
 *
 * @example
 * ```ts
 * import { params } from "./params.ts";
 * const P = params("scale_rows", { rows: "u32", eps: "f32", shape: ["u32", 8] });
 * const words = P.pack({ rows: 4, eps: 1e-5, shape: [2, 3] });
 * console.log(words[0], P.wgsl.includes("fn p_eps() -> f32")); // 4 true
 * ```
 */
export function params<const D extends ParamDecls>(kernel: string, decls: D): ParamBlock<D> {
  const entries: Entry[] = [];
  const offsets: Record<string, number> = {};
  let words = 0;
  for (const [name, decl] of Object.entries(decls)) {
    if (!NAME.test(name)) {
      throw new MoongradError(
        kernel,
        `parameter name "${name}" must match ${NAME} (it becomes the WGSL function p_${name})`,
      );
    }
    const [kind, length] = typeof decl === "string" ? [decl, 0] : [decl[0], decl[1]];
    if (kind !== "u32" && kind !== "i32" && kind !== "f32") {
      throw new MoongradError(
        kernel,
        `parameter "${name}" has kind ${kind}; expected u32, i32 or f32`,
      );
    }
    if (typeof decl !== "string" && !(Number.isInteger(length) && length >= 1)) {
      throw new MoongradError(
        kernel,
        `array parameter "${name}" has length ${length}; expected an integer ≥ 1`,
      );
    }
    entries.push({ name, kind, offset: words, length });
    offsets[name] = words;
    words += Math.max(length, 1);
  }
  if (words > PARAM_USABLE_WORDS) {
    throw new MoongradError(
      kernel,
      `parameters take ${words} words (${
        entries.map((e) => `${e.name}: ${Math.max(e.length, 1)}`).join(", ")
      }); the uniform block holds ${PARAM_USABLE_WORDS} (word 63 is reserved)`,
    );
  }
  const wgsl = entries.map(accessor).join("\n");
  const pack = (values: ParamValues<D>): Uint32Array => {
    const out = new Uint32Array(PARAM_WORDS);
    const given = values as Record<string, number | boolean | ArrayLike<number> | undefined>;
    for (const e of entries) {
      const v = given[e.name];
      if (e.length === 0) {
        out[e.offset] = word(kernel, e, v, e.name);
        continue;
      }
      if (typeof v !== "object" || v === null) {
        throw new MoongradError(
          kernel,
          `parameter "${e.name}" is ${
            v === undefined ? "missing" : typeof v
          }; expected an array of up to ${e.length} ${e.kind}`,
        );
      }
      if (v.length > e.length) {
        throw new MoongradError(
          kernel,
          `parameter "${e.name}" has ${v.length} values [${
            Array.from(v).join(", ")
          }]; it holds at most ${e.length} (rank too large?)`,
        );
      }
      for (let i = 0; i < v.length; i++) {
        out[e.offset + i] = word(kernel, e, v[i], `${e.name}[${i}]`);
      }
    }
    for (const k of Object.keys(given)) {
      if (!(k in offsets)) {
        throw new MoongradError(
          kernel,
          `unknown parameter "${k}"; declared: ${Object.keys(offsets).join(", ")}`,
        );
      }
    }
    return out;
  };
  return {
    kernel,
    decls,
    words,
    wgsl,
    entries,
    offsets: offsets as ParamBlock<D>["offsets"],
    pack,
  };
}

/** The u32 bits of one value of parameter entry `e` (`what` names it in errors). */
function word(kernel: string, e: Entry, v: unknown, what: string): number {
  if (typeof v === "boolean" && e.kind === "u32" && e.length === 0) return v ? 1 : 0;
  if (typeof v !== "number") {
    throw new MoongradError(
      kernel,
      `parameter "${what}" is ${v === undefined ? "missing" : `a ${typeof v}`}; expected ${e.kind}`,
    );
  }
  if (e.kind === "f32") {
    F32[0] = v;
    return F32_BITS[0];
  }
  const [lo, hi] = e.kind === "u32" ? [0, 0xffffffff] : [-0x80000000, 0x7fffffff];
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new MoongradError(
      kernel,
      `parameter "${what}" is ${v}; expected an integer in [${lo}, ${hi}] (${e.kind})`,
    );
  }
  return v >>> 0;
}

/**
 * The largest length `r` such that `fixed` scalar words plus `perUnit` arrays of length `r`
 * fit in the block: the rank a kernel with rank-length arrays (shape, strides) supports.
 *
 * @example
 * ```ts
 * import { fitLength } from "./params.ts";
 * console.log(fitLength(4, 3)); // 19: n, rank, two offsets and shape/src/dst strides
 * ```
 */
export function fitLength(fixed: number, perUnit: number): number {
  return Math.floor((PARAM_USABLE_WORDS - fixed) / perUnit);
}

/** A parameter block re-laid out with its arrays cut to the words a launch uses. */
export interface CompactParams {
  /** WGSL accessors (`p_name<suffix>`), reading words from `base` on. */
  wgsl: string;
  /** The launch's words in the compact layout. */
  words: number[];
  /** The used array lengths: the accessors' source depends on them. */
  key: string;
}

/**
 * Re-lays a launch's packed words (`packed`, laid out by `layout`) with each array cut after
 * its last non-zero word, for core/colaunch.ts, which puts two kernels' parameters in one
 * block. The accessors keep their meaning exactly: an array read past the cut returns 0, as
 * the original block's zero padding did. Null when the layout has no entries (not made by
 * `params`).
 *
 * @example
 * ```ts
 * import { compactParams, params } from "./params.ts";
 * const P = params("k", { n: "u32", shape: ["u32", 20] });
 * const c = compactParams(P, P.pack({ n: 7, shape: [2, 3] }), 10, "_c1")!;
 * console.log(c.words, c.wgsl.includes("fn p_shape_c1(i: u32)")); // [7, 2, 3] true
 * ```
 */
export function compactParams(
  layout: ParamLayout,
  packed: Uint32Array,
  base: number,
  suffix: string,
): CompactParams | null {
  if (!layout.entries) return null;
  const words: number[] = [];
  const lines: string[] = [];
  const used: number[] = [];
  for (const e of layout.entries) {
    const at = base + words.length;
    const read = (i: string) =>
      e.kind === "u32" ? `param_word(${i})` : `bitcast<${e.kind}>(param_word(${i}))`;
    if (e.length === 0) {
      words.push(packed[e.offset]);
      lines.push(`fn p_${e.name}${suffix}() -> ${e.kind} { return ${read(`${at}u`)}; }`);
      continue;
    }
    let n = e.length;
    while (n > 1 && packed[e.offset + n - 1] === 0) n--;
    used.push(n);
    for (let i = 0; i < n; i++) words.push(packed[e.offset + i]);
    const word = `param_word(${at}u + min(i, ${n - 1}u))`;
    const value = n === e.length ? word : `select(0u, ${word}, i < ${n}u)`;
    lines.push(
      `fn p_${e.name}${suffix}(i: u32) -> ${e.kind} { return ${
        e.kind === "u32" ? value : `bitcast<${e.kind}>(${value})`
      }; }`,
    );
  }
  return { wgsl: lines.join("\n"), words, key: used.join(",") };
}

/**
 * WGSL accessors `p_<name>()` for u32 words at `base`, `base + 1`, … of the block (core/colaunch.ts
 * places its grid words after two kernels' compacted parameters with them).
 *
 * @example
 * ```ts
 * import { wordAccessors } from "./params.ts";
 * console.log(wordAccessors(["n0"], 40)); // fn p_n0() -> u32 { return param_word(40u); }
 * ```
 */
export function wordAccessors(names: readonly string[], base: number): string {
  return names.map((n, i) => `fn p_${n}() -> u32 { return param_word(${base + i}u); }`).join(
    "\n",
  );
}
