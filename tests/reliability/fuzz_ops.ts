/**
 * The op catalogue of the chain fuzz (fuzz_test.ts): for every op a chain may hold, its float64
 * reference (forward and vjp, built from tests/reference/, plain Float64Array loops that share
 * nothing with the library's kernels) and the moongrad call that computes it on the GPU.
 * A chain is a list of steps over numbered values (inputs, constants, masks, step results);
 * `fuzz_gen.ts` draws chains, `fuzz_test.ts` runs both sides and compares.
 */
import * as mg from "../../mod.ts";
import { broadcastTo, map, nd, NDArray, permute, size, sumTo, zip } from "../reference/ndarray.ts";
import {
  BINARY,
  binaryVjp,
  clampRef,
  clampVjp,
  sliceRef,
  sliceVjp,
  UNARY,
  unaryVjp,
  whereRef,
  whereVjp,
} from "../reference/elementwise.ts";
import {
  extremumVjp,
  maxRef,
  meanRef,
  meanVjp,
  minRef,
  sumRef,
  sumVjp,
  varRef,
  varVjp,
} from "../reference/reduce.ts";
import { logSoftmaxRef, logSoftmaxVjp, softmaxRef, softmaxVjp } from "../reference/softmax.ts";
import { concatRef, concatVjp } from "../reference/concat.ts";
import { matmulRef, matmulVjpRef } from "../reference/matmul.ts";
import type { TapeNode } from "../reference/tape.ts";

/** An operand: a value number, or a plain number (a scalar operand, never differentiated). */
export type Arg = number | { scalar: number };

/** Parameters of a step (which ones depends on the op). */
export interface Params {
  /** Reduction axes as passed to the library (undefined: all). */
  axes?: number | number[];
  /** Keep reduced axes. */
  keepDims?: boolean;
  /** var: the denominator's correction. */
  correction?: number;
  /** softmax, slice, concat, unsqueeze, squeeze axis. */
  axis?: number;
  /** reshape / expand target as passed to the library (may hold -1). */
  shape?: number[];
  /** permute axes (may be negative). */
  perm?: number[];
  /** transpose axes. */
  dims?: [number, number];
  /** slice start / end (PyTorch semantics: negative from the end, clamped) and step. */
  start?: number;
  end?: number;
  step?: number;
  /** log / sqrt: added to the input first (keeps it positive). */
  shift?: number;
  /** clamp bounds. */
  lo?: number;
  hi?: number;
}

/** The op names a chain may hold. */
export type OpName =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "tanh"
  | "sigmoid"
  | "silu"
  | "relu"
  | "square"
  | "clamp"
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "maximum"
  | "minimum"
  | "where"
  | "sum"
  | "mean"
  | "max"
  | "min"
  | "var"
  | "softmax"
  | "logSoftmax"
  | "reshape"
  | "permute"
  | "transpose"
  | "slice"
  | "expand"
  | "unsqueeze"
  | "squeeze"
  | "contiguous"
  | "concat"
  | "matmul";

/** One step of a chain. */
export interface Step {
  /** The op. */
  op: OpName;
  /** Operands (value numbers or scalars). */
  args: Arg[];
  /** Op parameters. */
  p: Params;
  /** Number of the value it makes; -1 for a probe. */
  out: number;
  /** A probe: the library must refuse it with a MoongradError and leak nothing. */
  probe?: boolean;
}

/** The float64 side of an op: output and vjp (gradient per operand, null for constants). */
export type RefOp = (xs: NDArray[], p: Params) => {
  out: NDArray;
  vjp: (g: NDArray) => (NDArray | null)[];
};

/** The GPU side of an op; `track` registers intermediate tensors for disposal. */
export type GpuOp = (
  xs: (mg.Tensor | number)[],
  p: Params,
  track: (t: mg.Tensor) => mg.Tensor,
) => mg.Tensor;

const T = (x: mg.Tensor | number) => x as mg.Tensor;

/** Normalised, sorted reduction axes (PyTorch: a rank-0 tensor accepts axis 0 / -1). */
export function normAxes(axes: number | number[] | undefined, rank: number): number[] {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === "number" ? [axes] : axes;
  return list.map((a) => (a < 0 ? a + Math.max(rank, 1) : a)).filter((a) => a < rank)
    .sort((a, b) => a - b);
}

/** Normalised axis for an op over `rank` axes (rank 0 counts as 1, as in PyTorch). */
export function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + Math.max(rank, 1) : axis;
}

/** PyTorch's resolution of a slice start/end against an axis of length n. */
export function resolveSlice(n: number, start: number, end: number | undefined): [number, number] {
  const fix = (v: number) => (v < 0 ? Math.max(v + n, 0) : Math.min(v, n));
  const s = fix(start);
  return [s, Math.max(fix(end ?? n), s)];
}

/** A target shape with -1 resolved: reshape (-1 = the rest) or expand (-1 = keep). */
export function resolveTarget(
  kind: "reshape" | "expand",
  target: number[],
  from: readonly number[],
) {
  if (kind === "expand") {
    const lead = target.length - from.length;
    return target.map((d, i) => (d === -1 ? from[i - lead] : d));
  }
  const rest = target.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  return target.map((d) => (d === -1 ? size(from) / rest : d));
}

const reshaped = (x: NDArray, shape: readonly number[]) => new NDArray(x.data, shape);

function unaryRef(name: string): RefOp {
  const u = UNARY[name];
  return ([x], p) => {
    const s = p.shift ?? 0;
    const xs = s ? map(x, (v) => v + s) : x;
    return { out: map(xs, (v) => u.f(v)), vjp: (g) => [unaryVjp(u, xs, g)] };
  };
}

function binaryRef(name: string): RefOp {
  const b = BINARY[name];
  return ([x, y]) => ({ out: zip([x, y], (u, v) => b.f(u, v)), vjp: (g) => binaryVjp(b, x, y, g) });
}

const reduceRef = (
  f: (x: NDArray, axes: number[], keep: boolean) => NDArray,
  vjp: (x: NDArray, axes: number[], g: NDArray) => NDArray,
): RefOp =>
([x], p) => {
  const axes = normAxes(p.axes, x.rank);
  return { out: f(x, axes, p.keepDims ?? false), vjp: (g) => [vjp(x, axes, g)] };
};

function permRef(x: NDArray, perm: number[]) {
  const axes = perm.map((a) => normAxis(a, x.rank));
  const inverse = new Array<number>(axes.length);
  axes.forEach((a, i) => (inverse[a] = i));
  return { out: permute(x, axes), vjp: (g: NDArray) => [permute(g, inverse)] };
}

/** Float64 reference of every op. */
export const REF: Record<OpName, RefOp> = {
  neg: unaryRef("neg"),
  exp: unaryRef("exp"),
  log: unaryRef("log"),
  sqrt: unaryRef("sqrt"),
  tanh: unaryRef("tanh"),
  sigmoid: unaryRef("sigmoid"),
  silu: unaryRef("silu"),
  relu: unaryRef("relu"),
  square: unaryRef("square"),
  clamp: ([x], p) => ({
    out: clampRef(x, p.lo, p.hi),
    vjp: (g) => [clampVjp(x, g, p.lo, p.hi)],
  }),
  add: binaryRef("add"),
  sub: binaryRef("sub"),
  mul: binaryRef("mul"),
  div: binaryRef("div"),
  maximum: binaryRef("maximum"),
  minimum: binaryRef("minimum"),
  where: ([c, a, b]) => ({
    out: whereRef(c, a, b),
    vjp: (g) => [null, ...whereVjp(c, a, b, g)],
  }),
  sum: reduceRef(sumRef, sumVjp),
  mean: reduceRef(meanRef, meanVjp),
  max: reduceRef(maxRef, (x, axes, g) => extremumVjp(x, axes, g, "max")),
  min: reduceRef(minRef, (x, axes, g) => extremumVjp(x, axes, g, "min")),
  var: ([x], p) => {
    const axes = normAxes(p.axes, x.rank);
    const c = p.correction ?? 1;
    return { out: varRef(x, axes, p.keepDims ?? false, c), vjp: (g) => [varVjp(x, axes, g, c)] };
  },
  softmax: ([x], p) => ({ out: softmaxRef(x, p.axis!), vjp: (g) => [softmaxVjp(x, p.axis!, g)] }),
  logSoftmax: ([x], p) => ({
    out: logSoftmaxRef(x, p.axis!),
    vjp: (g) => [logSoftmaxVjp(x, p.axis!, g)],
  }),
  reshape: ([x], p) => ({
    out: reshaped(x, resolveTarget("reshape", p.shape!, x.shape)),
    vjp: (g) => [reshaped(g, x.shape)],
  }),
  permute: ([x], p) => permRef(x, p.perm!),
  transpose: ([x], p) => {
    if (x.rank === 0) return { out: x, vjp: (g) => [g] }; // PyTorch: dims 0 / -1 of a scalar
    const perm = [...Array(x.rank).keys()];
    const [a, b] = p.dims!.map((d) => normAxis(d, x.rank));
    [perm[a], perm[b]] = [perm[b], perm[a]];
    return permRef(x, perm);
  },
  slice: ([x], p) => {
    const ax = normAxis(p.axis!, x.rank);
    const [s, e] = resolveSlice(x.shape[ax], p.start!, p.end);
    const step = p.step ?? 1;
    return {
      out: sliceRef(x, ax, s, e, step),
      vjp: (g) => [sliceVjp(x.shape, ax, s, step, g)],
    };
  },
  expand: ([x], p) => ({
    out: broadcastTo(x, resolveTarget("expand", p.shape!, x.shape)),
    vjp: (g) => [sumTo(g, x.shape)],
  }),
  unsqueeze: ([x], p) => {
    const shape = [...x.shape];
    shape.splice(normAxis(p.axis!, x.rank + 1), 0, 1);
    return { out: reshaped(x, shape), vjp: (g) => [reshaped(g, x.shape)] };
  },
  squeeze: ([x], p) => {
    const drop = p.axis === undefined ? -2 : normAxis(p.axis, x.rank);
    const shape = x.shape.filter((d, i) => (drop === -2 ? d !== 1 : i !== drop));
    return { out: reshaped(x, shape), vjp: (g) => [reshaped(g, x.shape)] };
  },
  contiguous: ([x]) => ({ out: x, vjp: (g) => [g] }),
  concat: (xs, p) => {
    const ax = normAxis(p.axis!, xs[0].rank);
    return {
      out: concatRef(xs, ax),
      vjp: (g) => concatVjp(g, xs.map((x) => x.shape[ax]), ax),
    };
  },
  matmul: ([a, b]) => ({ out: matmulRef(a, b), vjp: (g) => matmulVjpRef(a, b, g) }),
};

/** The moongrad call of every op. */
export const GPU: Record<OpName, GpuOp> = {
  neg: ([x]) => T(x).neg(),
  exp: ([x]) => T(x).exp(),
  log: ([x], p, track) => (p.shift ? track(T(x).add(p.shift)) : T(x)).log(),
  sqrt: ([x], p, track) => (p.shift ? track(T(x).add(p.shift)) : T(x)).sqrt(),
  tanh: ([x]) => T(x).tanh(),
  sigmoid: ([x]) => T(x).sigmoid(),
  silu: ([x]) => T(x).silu(),
  relu: ([x]) => T(x).relu(),
  square: ([x]) => T(x).square(),
  clamp: ([x], p) => T(x).clamp(p.lo, p.hi),
  add: ([a, b]) => mg.add(a, b),
  sub: ([a, b]) => mg.sub(a, b),
  mul: ([a, b]) => mg.mul(a, b),
  div: ([a, b]) => mg.div(a, b),
  maximum: ([a, b]) => mg.maximum(a, b),
  minimum: ([a, b]) => mg.minimum(a, b),
  where: ([c, a, b]) => mg.where(T(c), a, b),
  sum: ([x], p) => T(x).sum(p.axes, p.keepDims),
  mean: ([x], p) => T(x).mean(p.axes, p.keepDims),
  max: ([x], p) => T(x).max(p.axes, p.keepDims),
  min: ([x], p) => T(x).min(p.axes, p.keepDims),
  var: ([x], p) => T(x).var(p.axes, { correction: p.correction, keepDims: p.keepDims }),
  softmax: ([x], p) => T(x).softmax(p.axis),
  logSoftmax: ([x], p) => T(x).logSoftmax(p.axis),
  reshape: ([x], p) => T(x).reshape(p.shape!),
  permute: ([x], p) => T(x).permute(p.perm!),
  transpose: ([x], p) => T(x).transpose(...p.dims!),
  slice: ([x], p) => T(x).slice(p.axis!, p.start!, p.end, p.step),
  expand: ([x], p) => T(x).expand(p.shape!),
  unsqueeze: ([x], p) => T(x).unsqueeze(p.axis!),
  squeeze: ([x], p) => T(x).squeeze(p.axis),
  contiguous: ([x]) => T(x).contiguous(),
  concat: (xs, p) => mg.concat(xs.map(T), p.axis),
  matmul: ([a, b]) => T(a).matmul(T(b)),
};

/** A leaf of a chain: a differentiable input, a constant operand, or a bool mask. */
export interface Leaf {
  /** input: requires grad; const: f32 without grad; mask: bool. */
  kind: "input" | "const" | "mask";
  /** Shape. */
  shape: number[];
  /** Values (f32-representable; 0/1 for a mask). */
  data: Float64Array;
}

/** A drawn chain: leaves and steps over numbered values, and the loss weight. */
export interface Chain {
  /** The seed that drew it. */
  seed: number;
  /** Value i is a leaf (values[i] is a Leaf) or the result of a step (values[i] is a Step). */
  values: (Leaf | Step)[];
  /** The steps, in order (probes included). */
  steps: Step[];
  /** Number of the output value. */
  out: number;
  /** Weights w of the loss Σ out·w (f32-representable, the output's shape). */
  weight: Float64Array;
}

/** Is value `v` a leaf? */
export const isLeaf = (v: Leaf | Step): v is Leaf => "kind" in v;

/** The float64 operands of a step from the values computed so far. */
export function refArgs(args: Arg[], vals: readonly NDArray[]): NDArray[] {
  return args.map((a) => (typeof a === "number" ? vals[a] : nd([a.scalar], [])));
}

/**
 * Runs a chain's reference: every value and, for the step results, the tape nodes.
 * `override` replaces leaf data (finite differences perturb inputs through it).
 */
export function runRef(
  chain: Pick<Chain, "values">,
  override?: ReadonlyMap<number, Float64Array>,
): { vals: NDArray[]; nodes: (TapeNode | undefined)[] } {
  const vals: NDArray[] = [];
  const nodes: (TapeNode | undefined)[] = [];
  chain.values.forEach((v, i) => {
    if (isLeaf(v)) {
      vals.push(new NDArray(override?.get(i) ?? v.data, v.shape));
      nodes.push(undefined);
      return;
    }
    const r = REF[v.op](refArgs(v.args, vals), v.p);
    vals.push(r.out);
    const args = v.args.map((a) =>
      typeof a === "number" && (chain.values[a] as Leaf).kind !== "const" &&
        (chain.values[a] as Leaf).kind !== "mask"
        ? a
        : null
    );
    nodes.push({ args, vjp: r.vjp });
  });
  return { vals, nodes };
}

/** Human-readable chain: one line per leaf and step, with shapes; enough to reproduce by hand. */
export function describeChain(chain: Chain, vals?: readonly NDArray[]): string {
  const arg = (a: Arg) => (typeof a === "number" ? `v${a}` : `${a.scalar}`);
  const lines: string[] = [];
  chain.values.forEach((v, i) => {
    if (isLeaf(v)) {
      lines.push(`  v${i} = ${v.kind} [${v.shape}]`);
      return;
    }
    const shape = vals ? ` -> [${vals[i].shape}]` : "";
    lines.push(`  v${i} = ${v.op}(${v.args.map(arg).join(", ")}${fmtParams(v.p)})${shape}`);
  });
  for (const s of chain.steps.filter((s) => s.probe)) {
    lines.push(`  probe: ${s.op}(${s.args.map(arg).join(", ")}${fmtParams(s.p)}) must throw`);
  }
  lines.push(`  loss = sum(v${chain.out} * w)`);
  return lines.join("\n");
}

function fmtParams(p: Params): string {
  const parts = Object.entries(p).filter(([, v]) => v !== undefined).map(([k, v]) =>
    `${k}=${JSON.stringify(v)}`
  );
  return parts.length ? `; ${parts.join(", ")}` : "";
}

/** Σ out·w in float64. */
export function lossOf(out: NDArray, w: Float64Array): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i] * w[i];
  return s;
}
