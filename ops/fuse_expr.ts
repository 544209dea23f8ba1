/**
 * The symbolic side of `fuse` (ops/fuse.ts): a trace of pointwise ops over the arguments of a
 * fused function, and its reverse-mode derivative as more nodes of the same trace.
 *
 * A `FuseExpr` mirrors the pointwise methods of Tensor (add, mul, exp, gt, ...), so the same
 * arrow function runs eagerly on tensors or traced on expressions. Each node is the WGSL of the
 * eager op (the UNARY / BINARY tables of ops/elementwise.ts) applied to earlier nodes, so a
 * fused kernel computes, NaN and all, what the chain of eager kernels computes (in f32
 * registers instead of through memory). Identical nodes are shared (hash-consing), which also
 * lets the derivative reuse the forward values (exp's gradient reads exp's node). Numbers
 * inside the traced function become constants read from the kernel's parameters (any f32,
 * NaN and ±∞ included, with no new source text per value); they are fixed at trace time.
 *
 * The derivative: nodes in reverse creation order (a topological order), each adjoint pushed
 * to its operands through the vjp rules of ops/elementwise.ts (UNARY_GRAD, BINARY_GRAD) and
 * summed with `add`. Every node is elementwise over the output shape, so broadcast operands
 * are reduced once, after the kernel (ops/fuse.ts).
 */
import { type DType, isFloat } from "../core/dtype.ts";
import { MoongradError } from "../core/errors.ts";
import { BINARY, BINARY_GRAD, UNARY, UNARY_GRAD } from "./elementwise.ts";

/**
 * An operand of a traced op: an expression of the same trace or a number (a constant).
 *
 * @example Numbers mix with expressions
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const half: mg.FuseOperand = 0.5;
 * const f = mg.fuse((x) => x.mul(half));
 * console.log(await f(mg.tensor([4])).toArray()); // [2]
 * ```
 */
export type FuseOperand = FuseExpr | number;

/** What a node is: an argument of the fused function, a constant, or an op. */
export type NodeKind =
  | { kind: "arg"; index: number }
  | { kind: "const"; value: number; slot: number }
  | { kind: "op"; op: string; wgsl: string; args: readonly FuseExpr[] };

/** A node's place in its trace (kept off FuseExpr's public surface). */
export interface ExprInternals {
  /** The trace this node belongs to. */
  readonly trace: FuseTrace;
  /** Index in the trace (creation order). */
  readonly id: number;
  /** What the node is. */
  readonly node: NodeKind;
}

let makeExpr: (inner: ExprInternals, dtype: DType) => FuseExpr;
/** The trace, index and kind of a node. */
export let internals: (e: FuseExpr) => ExprInternals;

/** The nodes recorded while tracing one fused function for one argument signature. */
export class FuseTrace {
  /** Every node, in creation order (operands before their users). */
  readonly nodes: FuseExpr[] = [];
  /** Constants in parameter order (index = the `c<k>` parameter; bool constants are literals). */
  readonly consts: { value: number; dtype: DType }[] = [];
  #shared = new Map<string, FuseExpr>();

  /** Creates the trace; `name` appears in error messages. */
  constructor(readonly name: string) {}

  /** The node of argument `index`, of dtype `dtype`. */
  arg(index: number, dtype: DType): FuseExpr {
    return this.#node(`a${index}`, dtype, { kind: "arg", index });
  }

  /** A constant of dtype `dtype` (shared by value). */
  constant(value: number, dtype: DType): FuseExpr {
    const key = `c${dtype}:${Object.is(value, -0) ? "-0" : value}`;
    const hit = this.#shared.get(key);
    if (hit) return hit;
    const slot = dtype === "bool" ? -1 : this.consts.push({ value, dtype }) - 1;
    return this.#node(key, dtype, { kind: "const", value, slot });
  }

  /** The node `wgsl` (over v0, v1, ...) of `args`, of dtype `dtype` (shared when identical). */
  op(op: string, wgsl: string, args: readonly FuseExpr[], dtype: DType): FuseExpr {
    const key = `${dtype}|${wgsl}|${args.map((a) => internals(a).id).join(",")}`;
    return this.#node(key, dtype, { kind: "op", op, wgsl, args });
  }

  #node(key: string, dtype: DType, node: NodeKind): FuseExpr {
    const hit = this.#shared.get(key);
    if (hit) return hit;
    const e = makeExpr({ trace: this, id: this.nodes.length, node }, dtype);
    this.nodes.push(e);
    this.#shared.set(key, e);
    return e;
  }
}

/**
 * A symbolic value inside `mg.fuse`: one element of a pointwise computation. Its methods are
 * Tensor's pointwise methods (numbers allowed as operands, as on tensors); `cond.where(a, b)`
 * picks a where the bool `cond` holds.
 *
 * @example The same function, eager and fused
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const f = (a: mg.FuseExpr, b: mg.FuseExpr) => a.mul(b).add(1).relu();
 * const fused = mg.fuse(f);
 * const a = mg.tensor([1, -2]), b = mg.tensor([3, 4]);
 * console.log(await fused(a, b).toArray()); // [4, 0]
 * ```
 */
export class FuseExpr {
  /** Element type (f16 values are computed in f32; comparisons give bool). */
  readonly dtype: DType;
  #in: ExprInternals;
  private constructor(inner: ExprInternals, dtype: DType) {
    this.#in = inner;
    this.dtype = dtype;
  }
  static {
    makeExpr = (inner, dtype) => new FuseExpr(inner, dtype);
    internals = (e) => e.#in;
  }

  /** a + b. */
  add(b: FuseOperand): FuseExpr {
    return binary("add", this, b);
  }
  /** a − b. */
  sub(b: FuseOperand): FuseExpr {
    return binary("sub", this, b);
  }
  /** a × b. */
  mul(b: FuseOperand): FuseExpr {
    return binary("mul", this, b);
  }
  /** a ÷ b. */
  div(b: FuseOperand): FuseExpr {
    return binary("div", this, b);
  }
  /** a ** b. */
  pow(b: FuseOperand): FuseExpr {
    return binary("pow", this, b);
  }
  /** Elementwise maximum (NaN wins). */
  maximum(b: FuseOperand): FuseExpr {
    return binary("maximum", this, b);
  }
  /** Elementwise minimum (NaN wins). */
  minimum(b: FuseOperand): FuseExpr {
    return binary("minimum", this, b);
  }
  /** a == b (bool). */
  eq(b: FuseOperand): FuseExpr {
    return binary("eq", this, b);
  }
  /** a != b (bool). */
  ne(b: FuseOperand): FuseExpr {
    return binary("ne", this, b);
  }
  /** a < b (bool). */
  lt(b: FuseOperand): FuseExpr {
    return binary("lt", this, b);
  }
  /** a <= b (bool). */
  le(b: FuseOperand): FuseExpr {
    return binary("le", this, b);
  }
  /** a > b (bool). */
  gt(b: FuseOperand): FuseExpr {
    return binary("gt", this, b);
  }
  /** a >= b (bool). */
  ge(b: FuseOperand): FuseExpr {
    return binary("ge", this, b);
  }
  /** −x. */
  neg(): FuseExpr {
    return unary("neg", this);
  }
  /** |x|. */
  abs(): FuseExpr {
    return unary("abs", this);
  }
  /** e^x. */
  exp(): FuseExpr {
    return unary("exp", this);
  }
  /** ln x. */
  log(): FuseExpr {
    return unary("log", this);
  }
  /** √x. */
  sqrt(): FuseExpr {
    return unary("sqrt", this);
  }
  /** 1/√x. */
  rsqrt(): FuseExpr {
    return unary("rsqrt", this);
  }
  /** sin x. */
  sin(): FuseExpr {
    return unary("sin", this);
  }
  /** cos x. */
  cos(): FuseExpr {
    return unary("cos", this);
  }
  /** tanh x. */
  tanh(): FuseExpr {
    return unary("tanh", this);
  }
  /** σ(x). */
  sigmoid(): FuseExpr {
    return unary("sigmoid", this);
  }
  /** x·σ(x). */
  silu(): FuseExpr {
    return unary("silu", this);
  }
  /** GELU, exact or with the tanh approximation. */
  gelu(approximate: "none" | "tanh" = "none"): FuseExpr {
    if (approximate !== "none" && approximate !== "tanh") {
      throw new MoongradError(
        `fuse(${internals(this).trace.name}).gelu`,
        `approximate must be "none" or "tanh", got ${approximate}`,
      );
    }
    return unary(approximate === "tanh" ? "gelu_tanh" : "gelu", this);
  }
  /** max(x, 0), NaN kept. */
  relu(): FuseExpr {
    return unary("relu", this);
  }
  /** x². */
  square(): FuseExpr {
    return unary("square", this);
  }
  /** `a` where this bool expression holds, else `b`. */
  where(a: FuseOperand, b: FuseOperand): FuseExpr {
    const op = `fuse(${internals(this).trace.name}).where`;
    if (this.dtype !== "bool") {
      throw new MoongradError(op, `cond must be bool, got ${this.dtype}; compare first (x.gt(0))`);
    }
    const [x, y] = operands("where", internals(this).trace, a, b);
    return internals(this).trace.op("where", "select(v2, v1, v0)", [this, x, y], x.dtype);
  }
}

function unary(op: string, x: FuseExpr): FuseExpr {
  const spec = UNARY[op];
  const wgsl = isFloat(x.dtype) ? spec.float : x.dtype === "i32" ? spec.int : undefined;
  if (!wgsl) {
    throw new MoongradError(
      `fuse(${internals(x).trace.name}).${op}`,
      `x has dtype ${x.dtype}; expected ${spec.int ? "f32, f16 or i32" : "f32 or f16"}`,
    );
  }
  return internals(x).trace.op(op, wgsl, [x], x.dtype);
}

/** Both operands as nodes of `trace`: a number takes the other's dtype (as in eager ops). */
function operands(op: string, trace: FuseTrace, a: FuseOperand, b: FuseOperand): FuseExpr[] {
  const where = `fuse(${trace.name}).${op}`;
  for (const [v, arg] of [[a, "a"], [b, "b"]] as const) {
    if (typeof v === "number") continue;
    if (!(v instanceof FuseExpr)) {
      throw new MoongradError(where, `${arg} must be a FuseExpr or a number, got ${typeof v}`);
    }
    if (internals(v).trace !== trace) {
      throw new MoongradError(where, `${arg} belongs to another fused function's trace`);
    }
  }
  if (typeof a === "number" && typeof b === "number") {
    throw new MoongradError(where, "at least one operand must be an expression, got two numbers");
  }
  const dtype = (a instanceof FuseExpr ? a : b as FuseExpr).dtype;
  const node = (v: FuseOperand) => typeof v === "number" ? trace.constant(v, dtype) : v;
  const [x, y] = [node(a), node(b)];
  if (x.dtype !== y.dtype) {
    throw new MoongradError(
      where,
      `operands have different dtypes: a is ${x.dtype}, b is ${y.dtype}; cast one before fusing`,
    );
  }
  return [x, y];
}

function binary(op: string, a: FuseExpr, b: FuseOperand): FuseExpr {
  const [x, y] = operands(op, internals(a).trace, a, b);
  const spec = BINARY[op];
  const dtype = x.dtype;
  const wgsl = isFloat(dtype) ? spec.float : dtype === "i32" ? spec.int : spec.bool;
  if (!wgsl) {
    const allowed = spec.bool ? "any dtype" : spec.int ? "f32, f16 or i32" : "f32 or f16";
    throw new MoongradError(
      `fuse(${internals(a).trace.name}).${op}`,
      `operands have dtype ${dtype}; expected ${allowed}`,
    );
  }
  return internals(a).trace.op(op, wgsl, [x, y], spec.compare ? "bool" : dtype);
}

/**
 * The gradient of `out` with respect to each argument node in `wrt` (null where no path
 * carries a gradient), as nodes of the same trace, given the upstream gradient node `g`.
 * Only float nodes carry gradients; comparisons and the `where` condition stop them.
 */
export function vjpExprs(
  out: FuseExpr,
  g: FuseExpr,
  wrt: readonly (FuseExpr | null)[],
): (FuseExpr | null)[] {
  const trace = internals(out).trace;
  const adjoint = new Map<number, FuseExpr>([[internals(out).id, g]]);
  const push = (to: FuseExpr, v: FuseExpr) => {
    if (!isFloat(to.dtype) || internals(to).node.kind === "const") return;
    const prev = adjoint.get(internals(to).id);
    adjoint.set(internals(to).id, prev ? prev.add(v) : v);
  };
  const rule = (wgsl: string, args: readonly FuseExpr[]) =>
    wgsl === "v0" ? args[0] : trace.op("grad", wgsl, args, g.dtype);
  for (let id = internals(out).id; id >= 0; id--) {
    const e = trace.nodes[id];
    const a = adjoint.get(id);
    const node = internals(e).node;
    if (!a || node.kind !== "op") continue;
    const { op, args } = node;
    if (op === "where") {
      const [c, x, y] = args;
      push(x, rule("select(0.0, v0, v1)", [a, c]));
      push(y, rule("select(v0, 0.0, v1)", [a, c]));
    } else if (op in UNARY_GRAD) {
      const r = UNARY_GRAD[op];
      push(args[0], rule(r.expr, [a, r.from === "input" ? args[0] : e]));
    } else if (op in BINARY_GRAD) {
      const named = { g: a, a: args[0], b: args[1], out: e };
      BINARY_GRAD[op].forEach((r, side) => {
        if (!isFloat(args[side].dtype) || internals(args[side]).node.kind === "const") return;
        push(args[side], rule(r.expr, r.args.map((n) => named[n])));
      });
    }
  }
  return wrt.map((w) => (w ? adjoint.get(internals(w).id) ?? null : null));
}
