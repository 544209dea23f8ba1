/**
 * `fuse(fn)`: a chain of pointwise ops as one kernel forward and one kernel backward.
 *
 * The function is traced once per argument signature (each argument's dtype, or "number")
 * on symbolic expressions (ops/fuse_expr.ts); the trace becomes the WGSL function
 * `fused(a0, a1, ...)`, called per element by a kernel specialised on each tensor argument's
 * layout: dense (contiguous and full-size: read at `offset + i`) or strided (broadcast or a
 * view: shape and strides are parameters, so a new shape never compiles a new pipeline; only
 * the dense/strided pattern and vec4 eligibility pick among a few variants). When the element
 * count, the last axis and every dense offset are multiples of 4, each invocation handles four
 * elements: vec4 loads and stores of the dense operands, four strided reads of the others.
 * When moreover every tensor argument is dense at offset 0 and the element count is a whole
 * number of 1-D workgroups of vec4s (a multiple of 1024, up to 65535 workgroups), the kernel
 * reads no offset and has no bounds check: its elements come from built-ins alone.
 * Number arguments and the constants of the trace are parameters.
 *
 * Backward is the trace's symbolic derivative (ops/fuse_expr.ts), generated the same way: one
 * kernel reads the upstream gradient and the saved arguments, recomputes what it needs of the
 * forward in registers, and writes the gradient of every argument that needs one at the output
 * shape; broadcast arguments are then reduced with `sumTo`. A gradient that is the upstream
 * gradient itself (an added term) is not copied. Nothing but the arguments is saved.
 *
 * Cost (lavapipe, 2 shared cores, 1M f32, wait included; a bare wait is ~10.5 ms there):
 * `(a + b) * c` fused is 14–16 ms against 17–26 ms for the two eager kernels, a plain vec4
 * copy of the same 4 MB being 13–14 ms. Twenty calls per wait (the kernel's own cost): 2.4–2.6
 * ms per call with the exact-grid kernel against 2.7–2.9 ms without it (A/B, same session).
 * Tracing costs a few µs per node, once per signature;
 * a call costs one key string, one parameter pack and one dispatch.
 */
import { type DType, isFloat, wgslType } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { type Binding, type Kernel, kernel } from "../core/kernel.ts";
import {
  fitLength,
  type ParamBlock,
  type ParamDecls,
  params,
  type ParamValues,
} from "../core/params.ts";
import type { GpuBuf } from "../core/pool.ts";
import { dispatch } from "../core/runtime.ts";
import { broadcastShapes } from "../core/shape.ts";
import { type Operand, Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { FuseExpr, FuseTrace, internals, vjpExprs } from "./fuse_expr.ts";
import { MATH_WGSL } from "./elementwise.ts";
import { grid1d, linearId } from "./grid.ts";
import { sumTo } from "./reduce.ts";
import { zeros } from "./creation.ts";

const WG = 256;

/**
 * Options of `fuse`.
 *
 * @example Name the fused op (kernel labels, error messages)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const opts: mg.FuseOptions = { name: "scaled_tanh" };
 * const f = mg.fuse((x) => x.tanh().mul(2), opts);
 * console.log(await f(mg.tensor([0])).toArray()); // [0]
 * ```
 */
export interface FuseOptions {
  /** Name of the fused op in kernel labels and error messages (letters, digits, _). */
  name?: string;
}

/**
 * A fused function: the traced function's arguments as tensors or numbers.
 *
 * @example The type of a fused two-argument function
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const axpy: mg.FusedFn<[mg.FuseExpr, mg.FuseExpr, mg.FuseExpr]> = mg.fuse((a, x, y) =>
 *   a.mul(x).add(y)
 * );
 * console.log(await axpy(2, mg.tensor([1, 2]), mg.tensor([1, 1])).toArray()); // [3, 5]
 * ```
 */
export type FusedFn<A extends readonly FuseExpr[]> = (
  ...args: { [K in keyof A]: Operand }
) => Tensor;

/** Expressions computed by one kernel over the argument leaves of a trace. */
interface Program {
  trace: FuseTrace;
  /** The leaf of each argument (null when the program does not read it). */
  leaves: readonly (FuseExpr | null)[];
  outputs: readonly FuseExpr[];
  /** Compiled variants by layout key. */
  variants: Map<string, Variant>;
}

interface Variant {
  k: Kernel;
  P: ParamBlock<ParamDecls>;
  /** Tensor arguments read through shape and strides (in order). */
  strided: number[];
  /** Tensor arguments read (in order: the index of each one's offset parameter). */
  tensors: number[];
  /** The largest output rank the strided arguments' parameters hold. */
  rank: number;
}

interface Traced {
  trace: FuseTrace;
  out: FuseExpr;
  leaves: FuseExpr[];
  forward: Program;
  backward: Map<string, { program: Program; wrt: (FuseExpr | null)[]; identity: boolean[] }>;
}

const NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

/**
 * Fuses a chain of pointwise ops into one kernel forward and one backward. `fn` receives one
 * symbolic `FuseExpr` per argument and combines them with Tensor's pointwise methods (add,
 * mul, exp, relu, gt, ..., and `cond.where(a, b)`); the returned function takes tensors (any
 * broadcastable shapes, one dtype as for the eager ops) or numbers in those places and returns
 * the result, with the same values, NaN rules and gradients as the eager chain. `fn` runs once
 * per argument signature (dtypes); numbers written inside it are fixed then: pass a value that
 * changes as an argument.
 *
 * @example One kernel for `(a + b) * c`, and its gradients
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const addMul = mg.fuse((a, b, c) => a.add(b).mul(c), { name: "add_mul" });
 * const a = mg.tensor([1, 2, 3], { requiresGrad: true });
 * const b = mg.tensor([[10], [20]]); // broadcasts to [2, 3]
 * const y = addMul(a, b, 2);
 * console.log(await y.toArray()); // [[22, 24, 26], [42, 44, 46]]
 * y.sum().backward();
 * console.log(await a.grad!.toArray()); // [4, 4, 4]
 * ```
 */
export function fuse<A extends FuseExpr[]>(
  fn: (...xs: A) => FuseExpr,
  options: FuseOptions = {},
): FusedFn<A> {
  const name = options.name ?? (fn.name && NAME.test(fn.name) ? fn.name : "fused");
  if (typeof fn !== "function") {
    throw new MoongradError("fuse", `fn must be a function of FuseExprs, got ${typeof fn}`);
  }
  if (!NAME.test(name)) {
    throw new MoongradError("fuse", `name "${name}" must match ${NAME}`);
  }
  const op = `fuse(${name})`;
  const traces = new Map<string, Traced>();
  return ((...args: Operand[]): Tensor => {
    let key = "";
    let dtype: DType | null = null;
    const shapes: (readonly number[])[] = [];
    args.forEach((a, i) => {
      if (typeof a === "number") {
        key += "n,";
        return;
      }
      if (!(a instanceof Tensor)) {
        throw new MoongradError(op, `argument ${i} must be a Tensor or a number, got ${typeof a}`);
      }
      a.storage(op);
      key += a.dtype + ",";
      if (dtype === null && a.dtype !== "bool") dtype = a.dtype;
      shapes.push(a.shape);
    });
    if (!shapes.length) {
      throw new MoongradError(op, `needs at least one Tensor argument, got ${args.length} numbers`);
    }
    let traced = traces.get(key);
    if (!traced) {
      traced = traceFn(op, name, fn as (...xs: FuseExpr[]) => FuseExpr, args, dtype ?? "f32");
      traces.set(key, traced);
    }
    const outShape = shapes.reduce((s, t) => broadcastShapes(op, s, t));
    const [out] = run(op, traced.forward, args, outShape);
    const tensors = args.filter((a): a is Tensor => a instanceof Tensor);
    const t = traced;
    return record(out, op, tensors, (g, needs, saved) => {
      // The retained handles stand in for the arguments (the caller may have disposed them).
      let j = 0;
      const kept = args.map((a) => (typeof a === "number" ? a : saved[j++]));
      return backward(op, t, kept, needs, g, outShape);
    }, tensors);
  }) as FusedFn<A>;
}

function traceFn(
  op: string,
  name: string,
  fn: (...xs: FuseExpr[]) => FuseExpr,
  args: readonly Operand[],
  scalarDtype: DType,
): Traced {
  const trace = new FuseTrace(name);
  const leaves = args.map((a, i) => trace.arg(i, typeof a === "number" ? scalarDtype : a.dtype));
  const out = fn(...leaves);
  if (!(out instanceof FuseExpr) || internals(out).trace !== trace) {
    throw new MoongradError(
      op,
      `fn must return an expression built from its arguments, got ${
        out instanceof FuseExpr ? "an expression of another trace" : typeof out
      }`,
    );
  }
  return {
    trace,
    out,
    leaves,
    forward: { trace, leaves, outputs: [out], variants: new Map() },
    backward: new Map(),
  };
}

/** Runs the backward program for the arguments in `needs` (tensor arguments, in order). */
function backward(
  op: string,
  t: Traced,
  args: readonly Operand[],
  needs: readonly boolean[],
  g: Tensor,
  outShape: readonly number[],
): (Tensor | null)[] {
  // Argument positions of the tensors, and which of them need a float gradient.
  const pos = args.flatMap((a, i) => (a instanceof Tensor ? [i] : []));
  const want = pos.map((p, j) => needs[j] && isFloat((args[p] as Tensor).dtype));
  const bkey = want.map((w) => (w ? 1 : 0)).join("");
  let b = t.backward.get(bkey);
  if (!b) {
    const gLeaf = t.trace.arg(args.length, t.out.dtype);
    const wrt = vjpExprs(t.out, gLeaf, pos.map((p, j) => (want[j] ? t.leaves[p] : null)));
    const identity = wrt.map((w) => w === gLeaf);
    const outputs = wrt.filter((w, j): w is FuseExpr => w !== null && !identity[j]);
    b = {
      program: { trace: t.trace, leaves: [...t.leaves, gLeaf], outputs, variants: new Map() },
      wrt,
      identity,
    };
    t.backward.set(bkey, b);
  }
  const full = b.program.outputs.length ? run(`${op}_grad`, b.program, [...args, g], outShape) : [];
  let k = 0;
  return pos.map((p, j) => {
    const w = b.wrt[j];
    if (!w) return null;
    const shape = (args[p] as Tensor).shape;
    if (g.size === 0) {
      if (!b.identity[j]) k++;
      return zeros(shape, { dtype: g.dtype });
    }
    const gFull = b.identity[j] ? g : full[k++];
    const r = sumTo(gFull, shape);
    if (r !== gFull && gFull !== g) gFull.dispose();
    return r;
  });
}

/** Runs `program` over `args` at `outShape`; returns one tensor per output. */
function run(
  op: string,
  program: Program,
  args: readonly Operand[],
  outShape: readonly number[],
): Tensor[] {
  const outs = program.outputs.map((o) => Tensor.empty(outShape, o.dtype));
  const n = outs[0].size;
  if (n === 0) return outs;
  const reads = readSet(program);
  // Layout key: per argument read, d(ense) / s(trided) / n(umber); vec4 when all allow it.
  let layout = "";
  let vec4 = n % 4 === 0;
  let anyStrided = false;
  args.forEach((a, i) => {
    if (!reads.has(i)) {
      layout += "-";
    } else if (typeof a === "number") {
      layout += "n";
    } else if (a.isContiguous && a.size === n) {
      layout += "d";
      if (a.offset % 4 !== 0) vec4 = false;
    } else {
      layout += "s";
      anyStrided = true;
    }
  });
  if (anyStrided && outShape[outShape.length - 1] % 4 !== 0) vec4 = false;
  // Exact grid: every argument dense at offset 0 and n a whole number of 1-D workgroups of
  // vec4s, so the kernel finds its elements from built-ins alone (see `compile`).
  const exact = vec4 && !anyStrided && n % (4 * WG) === 0 && n / (4 * WG) <= 65535 &&
    args.every((a, i) => typeof a === "number" || layout[i] === "-" || a.offset === 0);
  // One binding per distinct (buffer, binding type): all bindings are read_write
  // (core/kernel.ts), so one buffer bound twice would be two overlapping writable ranges.
  const bound: { buf: GpuBuf; type: string }[] = [];
  const slot = args.map((a, i) => {
    if (typeof a === "number" || layout[i] === "-") return -1;
    const buf = a.storage(op).buf;
    const type = vec4 && layout[i] === "d" ? `vec4<${wgslType(a.dtype)}>` : wgslType(a.dtype);
    const at = bound.findIndex((b) => b.buf === buf && b.type === type);
    return at >= 0 ? at : bound.push({ buf, type }) - 1;
  });
  const vkey = `${layout}${vec4 ? "4" : "1"}${exact ? "x" : ""}:${slot.join(",")}`;
  let v = program.variants.get(vkey);
  if (!v) {
    v = compile(op, program, layout, vec4, slot, bound.map((b) => b.type), exact);
    program.variants.set(vkey, v);
  }
  if (outShape.length > v.rank && v.strided.length) {
    throw new MoongradError(
      op,
      `output ${fmtShape(outShape)} has rank ${outShape.length}; with ${v.strided.length} ` +
        `broadcast or strided arguments at most ${v.rank} is supported`,
    );
  }
  // Parameters.
  const values: Record<string, number | ArrayLike<number>> = { n };
  if (v.strided.length) {
    const strides = new Array(v.strided.length * v.rank).fill(0);
    v.strided.forEach((ai, s) => {
      alignedStrides(op, args[ai] as Tensor, outShape).forEach((
        st,
        d,
      ) => (strides[s * v!.rank + d] = st));
    });
    values.rank = outShape.length;
    values.shape = outShape;
    values.strides = strides;
  }
  values.offsets = v.tensors.map((ai) => (args[ai] as Tensor).offset);
  args.forEach((a, i) => {
    if (typeof a === "number" && reads.has(i)) {
      const dt = program.leaves[i]!.dtype;
      values[`s${i}`] = dt === "bool" ? (a ? 1 : 0) : dt === "i32" ? Math.trunc(a) : a;
    }
  });
  for (const c of constsOf(program)) values[`c${c.slot}`] = c.value;
  const words = v.P.pack(values as ParamValues<ParamDecls>);
  // Buffers: one per distinct (buffer, binding type), then the outputs.
  const bufs: GpuBuf[] = bound.map((b) => b.buf);
  for (const o of outs) bufs.push(o.storage(op).buf);
  dispatch(v.k, bufs, words, grid1d(vec4 ? n / 4 : n, WG));
  return outs;
}

/** Argument indices the program's outputs depend on. */
function readSet(program: Program): Set<number> {
  const s = new Set<number>();
  for (const e of reachable(program)) {
    const nd = internals(e).node;
    if (nd.kind === "arg") s.add(nd.index);
  }
  return s;
}

/** Nodes the outputs depend on, in creation (topological) order. */
function reachable(program: Program): FuseExpr[] {
  const seen = new Map<number, FuseExpr>();
  const stack = [...program.outputs];
  while (stack.length) {
    const e = stack.pop()!;
    const { id, node } = internals(e);
    if (seen.has(id)) continue;
    seen.set(id, e);
    if (node.kind === "op") stack.push(...node.args);
  }
  return [...seen.entries()].sort((a, b) => a[0] - b[0]).map(([, e]) => e);
}

function constsOf(program: Program): { slot: number; value: number; dtype: DType }[] {
  const out: { slot: number; value: number; dtype: DType }[] = [];
  for (const e of reachable(program)) {
    const nd = internals(e).node;
    if (nd.kind === "const" && nd.slot >= 0) {
      out.push({ slot: nd.slot, value: nd.value, dtype: e.dtype });
    }
  }
  return out;
}

const computeType = (d: DType) => (isFloat(d) ? "f32" : d === "i32" ? "i32" : "bool");
const paramKind = (d: DType) => (isFloat(d) ? "f32" : d === "i32" ? "i32" : "u32");

/** Generates and compiles the kernel of one program for one argument layout. */
function compile(
  op: string,
  program: Program,
  layout: string,
  vec4: boolean,
  slot: readonly number[],
  boundTypes: readonly string[],
  exact = false,
): Variant {
  const nodes = reachable(program);
  const consts = constsOf(program);
  const tensors: number[] = [];
  const strided: number[] = [];
  const scalars: number[] = [];
  for (let i = 0; i < layout.length; i++) {
    if (layout[i] === "d" || layout[i] === "s") tensors.push(i);
    if (layout[i] === "s") strided.push(i);
    if (layout[i] === "n") scalars.push(i);
  }
  const bindings: Binding[] = boundTypes.map((type, i) => ({
    name: `in${i}`,
    type,
    access: "read",
  }));
  program.outputs.forEach((o, j) => {
    const t = wgslType(o.dtype);
    bindings.push({ name: `out${j}`, type: vec4 ? `vec4<${t}>` : t, access: "read_write" });
  });
  // Parameters.
  const decls: Record<string, "u32" | "i32" | "f32" | readonly ["u32", number]> = { n: "u32" };
  const fixed = 1 + Math.max(tensors.length, 1) + scalars.length + consts.length;
  const rank = strided.length ? fitLength(fixed + 1, strided.length + 1) : 0;
  if (strided.length) {
    if (rank < 1) {
      throw new MoongradError(op, `too many arguments and constants to fuse into one kernel`);
    }
    decls.rank = "u32";
    decls.shape = ["u32", rank];
    decls.strides = ["u32", strided.length * rank];
  }
  decls.offsets = ["u32", Math.max(tensors.length, 1)];
  for (const i of scalars) decls[`s${i}`] = paramKind(program.leaves[i]!.dtype);
  for (const c of consts) decls[`c${c.slot}`] = paramKind(c.dtype);
  const P = params(`${op}`, decls) as ParamBlock<ParamDecls>;
  // The fused function: arguments read, then one `let` per op node.
  const name = (e: FuseExpr): string => {
    const { id, node } = internals(e);
    if (node.kind === "arg") return `a${node.index}`;
    if (node.kind === "const") {
      return node.slot < 0 ? (node.value ? "true" : "false") : `p_c${node.slot}()`;
    }
    return `t${id}`;
  };
  const argList = [...reads(layout)].map((i) => `a${i}: ${computeType(program.leaves[i]!.dtype)}`);
  const lets = nodes.flatMap((e) => {
    const nd = internals(e).node;
    if (nd.kind !== "op") return [];
    const body = nd.wgsl.replace(/\bv(\d+)\b/g, (_, d) => name(nd.args[Number(d)]));
    return [`  let t${internals(e).id} = ${body};`];
  });
  const fields = program.outputs.map((o, j) => `o${j}: ${computeType(o.dtype)}`);
  const fnSrc = `
struct FusedOut { ${fields.join(", ")} }
fn fused(${argList.join(", ")}) -> FusedOut {
${lets.join("\n")}
  return FusedOut(${program.outputs.map(name).join(", ")});
}`;
  const stridedFn = strided.length
    ? `
fn strided(i: u32, t: u32, s: u32) -> u32 {
  var rem = i;
  var off = p_offsets(t);
  for (var d = i32(p_rank()) - 1; d >= 0; d--) {
    let dim = p_shape(u32(d));
    off += (rem % dim) * p_strides(s * ${rank}u + u32(d));
    rem /= dim;
  }
  return off;
}`
    : "";
  // Loads: each read argument as a value (scalar mode) or a vec4 (vec4 mode).
  const loads: string[] = [];
  const lanes = ["x", "y", "z", "w"];
  const convert = (d: DType, x: string, v: boolean) => {
    const ct = computeType(d);
    if (ct === "bool") return v ? `(${x} != vec4<u32>(0u))` : `(${x} != 0u)`;
    return v ? `vec4<${ct}>(${x})` : `${ct}(${x})`;
  };
  for (const i of reads(layout)) {
    const d = program.leaves[i]!.dtype;
    const ti = tensors.indexOf(i);
    if (layout[i] === "n") {
      loads.push(`let x${i} = p_s${i}();`);
    } else if (layout[i] === "d") {
      loads.push(
        `let x${i} = ${
          convert(
            d,
            `in${slot[i]}[${exact ? "" : `p_offsets(${ti}u)${vec4 ? " / 4u" : ""} + `}i]`,
            vec4,
          )
        };`,
      );
    } else if (!vec4) {
      loads.push(
        `let x${i} = ${
          convert(d, `in${slot[i]}[strided(i, ${ti}u, ${strided.indexOf(i)}u)]`, false)
        };`,
      );
    } else {
      const s = strided.indexOf(i);
      loads.push(
        `let e${i} = strided(i * 4u, ${ti}u, ${s}u);`,
        `let st${i} = p_strides(${s * rank}u + p_rank() - 1u);`,
        `let x${i} = vec4<${computeType(d)}>(${
          [0, 1, 2, 3].map((k) => convert(d, `in${slot[i]}[e${i} + ${k}u * st${i}]`, false)).join(
            ", ",
          )
        });`,
      );
    }
  }
  const callArgs = (lane: string | null) =>
    [...reads(layout)].map((i) => (lane && layout[i] !== "n" ? `x${i}.${lane}` : `x${i}`)).join(
      ", ",
    );
  let stores: string;
  if (!vec4) {
    stores = `  let r = fused(${callArgs(null)});\n` +
      program.outputs.map((o, j) => `  out${j}[i] = ${wgslType(o.dtype)}(r.o${j});`).join("\n");
  } else {
    stores = lanes.map((l, k) => `  let r${k} = fused(${callArgs(l)});`).join("\n") + "\n" +
      program.outputs.map((o, j) => {
        const t = wgslType(o.dtype);
        return `  out${j}[i] = vec4<${t}>(${lanes.map((_, k) => `${t}(r${k}.o${j})`).join(", ")});`;
      }).join("\n");
  }
  const body = `
  let i = ${linearId(WG)};${
    exact ? "" : `
  if (i >= p_n()${vec4 ? " / 4u" : ""}) { return; }`
  }
  ${loads.join("\n  ")}
${stores}`;
  const k = kernel({
    name: op.replace(/[^A-Za-z0-9_]/g, "_"),
    bindings,
    workgroupSize: [WG],
    params: P,
    prelude: MATH_WGSL + stridedFn + fnSrc,
    body,
  });
  return { k, P, strided, tensors, rank };
}

/** Indices of the arguments a layout reads (tensor or number). */
function* reads(layout: string): Generator<number> {
  for (let i = 0; i < layout.length; i++) if (layout[i] !== "-") yield i;
}

/** Strides of `x` right-aligned to `outShape`, with 0 on broadcast axes. */
function alignedStrides(op: string, x: Tensor, outShape: readonly number[]): number[] {
  const lead = outShape.length - x.rank;
  return outShape.map((d, i) => {
    if (i < lead) return 0;
    const xd = x.shape[i - lead];
    if (xd === d) return xd === 1 ? 0 : x.strides[i - lead];
    if (xd === 1) return 0;
    throw new MoongradError(op, `input shape [${x.shape}] does not broadcast to [${outShape}]`);
  });
}
