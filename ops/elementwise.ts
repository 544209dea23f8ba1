/**
 * Elementwise ops: unary math, binary arithmetic and comparisons with NumPy broadcasting,
 * `where`, `cast` and `contiguous`, each with its vjp next to it.
 */
import { type DType, isFloat } from "../core/dtype.ts";
import { fmtShape, MoongradError } from "../core/errors.ts";
import { broadcastShapes } from "../core/shape.ts";
import { type Operand, Tensor } from "../core/tensor.ts";
import { noGrad, record } from "../core/autograd.ts";
import { pointwise, type PointwiseInput } from "./pointwise.ts";
import { sumTo } from "./reduce.ts";
import { TRIG_WGSL } from "./wgsl_trig.ts";

/**
 * WGSL helpers shared by the float expressions below (stable in f32 for any input). NaN goes
 * through `mg_exp` (core/special_wgsl.ts), so every helper built on it returns NaN for NaN;
 * sin/cos are the accurate ones of ops/wgsl_trig.ts.
 */
export const MATH_WGSL = TRIG_WGSL + `
fn mg_tanh(x: f32) -> f32 {
  // Near 0, 1 − e^(−2|x|) cancels: use the Taylor series (truncation < 2e-9 relative).
  if (abs(x) < 0.125) {
    let x2 = x * x;
    return x * (1.0 + x2 * (-0.33333333 + x2 * (0.13333333 + x2 * -0.053968254)));
  }
  let e = mg_exp(-2.0 * abs(x));
  return sign(x) * (1.0 - e) / (1.0 + e);
}
fn mg_sigmoid(x: f32) -> f32 { let e = mg_exp(-abs(x)); return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0); }
fn mg_erf(x: f32) -> f32 {
  // Abramowitz & Stegun 7.1.26 refined: |error| < 1.5e-7.
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * mg_exp(-x * x);
  return sign(x) * y;
}
fn mg_gelu(x: f32) -> f32 { return 0.5 * x * (1.0 + mg_erf(x * 0.7071067811865476)); }
fn mg_gelu_tanh(x: f32) -> f32 { return 0.5 * x * (1.0 + mg_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
// PyTorch: pow(x, 0) = pow(1, y) = 1 even for NaN; otherwise NaN in, NaN out.
fn mg_pow(a: f32, b: f32) -> f32 {
  if (b == 0.0 || a == 1.0) { return 1.0; }
  if (mg_isnan(a) || mg_isnan(b)) { return mg_nan(); }
  if (a == 0.0) { return select(0.0, mg_inf(), b < 0.0); }
  let m = exp2(b * log2(abs(a)));
  if (a > 0.0) { return m; }
  if (fract(b) != 0.0) { return mg_nan(); }
  return select(m, -m, fract(b * 0.5) != 0.0);
}
// The gradient share of the first operand of maximum (gt) or minimum (lt), as in PyTorch:
// all of it when it wins or when either operand is NaN, half at a tie, none when it loses.
fn mg_extremum_share(a: f32, b: f32, wins: bool) -> f32 {
  if (mg_isnan(a) || mg_isnan(b)) { return 1.0; }
  return select(select(0.0, 0.5, a == b), 1.0, wins);
}`;

function checkTensor(op: string, x: unknown, arg: string): Tensor {
  if (!(x instanceof Tensor)) {
    throw new MoongradError(op, `${arg} must be a Tensor, got ${typeof x}`);
  }
  x.storage(op);
  return x;
}

// ---- unary ------------------------------------------------------------------------------

interface UnarySpec {
  float: string;
  int?: string;
}

const UNARY: Record<string, UnarySpec> = {
  neg: { float: "-v0", int: "-v0" },
  abs: { float: "abs(v0)", int: "abs(v0)" },
  exp: { float: "mg_exp(v0)" },
  log: { float: "mg_log(v0)" },
  sqrt: { float: "sqrt(v0)" },
  rsqrt: { float: "inverseSqrt(v0)" },
  sin: { float: "mg_sin(v0)" },
  cos: { float: "mg_cos(v0)" },
  tanh: { float: "mg_tanh(v0)" },
  sigmoid: { float: "mg_sigmoid(v0)" },
  silu: { float: "v0 * mg_sigmoid(v0)" },
  gelu: { float: "mg_gelu(v0)" },
  gelu_tanh: { float: "mg_gelu_tanh(v0)" },
  // NaN stays NaN and −0 stays −0, as in PyTorch.
  relu: { float: "select(v0, 0.0, v0 < 0.0 && !mg_isnan(v0))", int: "max(v0, 0)" },
  square: { float: "v0 * v0", int: "v0 * v0" },
};

function unary(op: string, x: Tensor): Tensor {
  checkTensor(op, x, "x");
  const spec = UNARY[op];
  const expr = isFloat(x.dtype) ? spec.float : x.dtype === "i32" ? spec.int : undefined;
  if (!expr) {
    throw new MoongradError(
      op,
      `x has dtype ${x.dtype}; expected ${spec.int ? "f32, f16 or i32" : "f32 or f16"}`,
    );
  }
  return pointwise(op, [x], x.shape, x.dtype, expr, MATH_WGSL);
}

/** Gradient kernel `g ⊙ f'(...)` as one pointwise pass over (g, saved). */
function gradKernel(op: string, g: Tensor, saved: Tensor, expr: string): Tensor {
  return pointwise(`${op}_grad`, [g, saved], g.shape, g.dtype, expr, MATH_WGSL);
}

function unaryWithGrad(
  op: string,
  x: Tensor,
  grad: string,
  from: "input" | "output",
): Tensor {
  const out = unary(op, x);
  const saved = from === "input" ? x : out;
  return record(out, op, [x], (g, _n, [s]) => [gradKernel(op, g, s, grad)], [saved]);
}

/**
 * −x.
 *
 * @example Negate
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.neg(mg.tensor([1, -2])).toArray()); // [-1, 2]
 * ```
 */
export const neg = (x: Tensor): Tensor =>
  record(unary("neg", x), "neg", [x], (g) => [unary("neg", g)]);
/**
 * |x| (gradient sign(x), 0 at 0).
 *
 * @example Absolute value
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.abs(mg.tensor([-1.5, 2])).toArray()); // [1.5, 2]
 * ```
 */
export const abs = (x: Tensor): Tensor => unaryWithGrad("abs", x, "v0 * sign(v1)", "input");
/**
 * e^x.
 *
 * @example Exponential (the method form is x.exp())
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.exp(mg.tensor([0, 1])).toArray()); // [1, 2.718…]
 * ```
 */
export const exp = (x: Tensor): Tensor => unaryWithGrad("exp", x, "v0 * v1", "output");
/**
 * Natural logarithm.
 *
 * @example Natural logarithm
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.log(mg.tensor([1, 0])).toArray()); // [0, -Infinity]
 * ```
 */
export const log = (x: Tensor): Tensor => unaryWithGrad("log", x, "v0 / v1", "input");
/**
 * Square root.
 *
 * @example Square root
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.sqrt(mg.tensor([4, 9])).toArray()); // [2, 3]
 * ```
 */
export const sqrt = (x: Tensor): Tensor => unaryWithGrad("sqrt", x, "v0 * 0.5 / v1", "output");
/**
 * 1 / √x.
 *
 * @example Reciprocal square root, e.g. to normalise a vector
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const v = mg.tensor([3, 4]);
 * const unit = v.mul(mg.rsqrt(v.square().sum()));
 * console.log(await unit.toArray()); // [0.6, 0.8] (to f32 precision)
 * ```
 */
export const rsqrt = (x: Tensor): Tensor =>
  unaryWithGrad("rsqrt", x, "v0 * -0.5 * v1 * v1 * v1", "output");
/**
 * Sine.
 *
 * @example Sine
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.sin(mg.tensor([0, Math.PI / 2])).toArray()); // [0, 1]
 * ```
 */
export const sin = (x: Tensor): Tensor => unaryWithGrad("sin", x, "v0 * mg_cos(v1)", "input");
/**
 * Cosine.
 *
 * @example Cosine
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.cos(mg.tensor([0, Math.PI])).toArray()); // [1, -1]
 * ```
 */
export const cos = (x: Tensor): Tensor => unaryWithGrad("cos", x, "-v0 * mg_sin(v1)", "input");
/**
 * Hyperbolic tangent.
 *
 * @example Hyperbolic tangent
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.tanh(mg.tensor([0, 20])).toArray()); // [0, 1]
 * ```
 */
export const tanh = (x: Tensor): Tensor =>
  unaryWithGrad("tanh", x, "v0 * (1.0 - v1 * v1)", "output");
/**
 * Logistic sigmoid 1 / (1 + e^−x).
 *
 * @example Logistic sigmoid
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.sigmoid(mg.tensor([0, -20])).toArray()); // [0.5, 2.06…e-9]
 * ```
 */
export const sigmoid = (x: Tensor): Tensor =>
  unaryWithGrad("sigmoid", x, "v0 * v1 * (1.0 - v1)", "output");
/**
 * SiLU x·σ(x).
 *
 * @example SiLU, the activation of K2's expert MLPs
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.silu(mg.tensor([0, 1])).toArray()); // [0, 0.731…]
 * ```
 */
export const silu = (x: Tensor): Tensor =>
  unaryWithGrad(
    "silu",
    x,
    "v0 * mg_sigmoid(v1) * (1.0 + v1 * (1.0 - mg_sigmoid(v1)))",
    "input",
  );
/**
 * GELU: exact `0.5·x·(1 + erf(x/√2))`, or the tanh approximation.
 *
 * @example Exact GELU and its tanh approximation
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([0, 1]);
 * console.log(await mg.gelu(x).toArray()); // [0, 0.8413…]
 * console.log(await mg.gelu(x, "tanh").toArray()); // [0, 0.8411…]
 * ```
 */
export function gelu(x: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  if (approximate !== "none" && approximate !== "tanh") {
    throw new MoongradError("gelu", `approximate must be "none" or "tanh", got ${approximate}`);
  }
  if (approximate === "tanh") {
    return unaryWithGrad(
      "gelu_tanh",
      x,
      `v0 * (0.5 * (1.0 + mg_tanh(0.7978845608028654 * (v1 + 0.044715 * v1 * v1 * v1))) +
        0.5 * v1 * (1.0 - mg_tanh(0.7978845608028654 * (v1 + 0.044715 * v1 * v1 * v1)) *
        mg_tanh(0.7978845608028654 * (v1 + 0.044715 * v1 * v1 * v1))) *
        0.7978845608028654 * (1.0 + 0.134145 * v1 * v1))`,
      "input",
    );
  }
  return unaryWithGrad(
    "gelu",
    x,
    "v0 * (0.5 * (1.0 + mg_erf(v1 * 0.7071067811865476)) + v1 * 0.3989422804014327 * exp(-0.5 * v1 * v1))",
    "input",
  );
}
/**
 * max(x, 0); NaN stays NaN (gradient 0 at 0, and passed through at NaN as in PyTorch).
 *
 * @example ReLU
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.relu(mg.tensor([-1, 0, 2])).toArray()); // [0, 0, 2]
 * ```
 */
export const relu = (x: Tensor): Tensor =>
  unaryWithGrad("relu", x, "select(0.0, v0, v1 > 0.0 || mg_isnan(v1))", "input");
/**
 * x².
 *
 * @example Square
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.square(mg.tensor([-3, 2])).toArray()); // [9, 4]
 * ```
 */
export const square = (x: Tensor): Tensor => unaryWithGrad("square", x, "2.0 * v0 * v1", "input");

// ---- binary -----------------------------------------------------------------------------

interface BinarySpec {
  float: string;
  int?: string;
  bool?: string;
  compare?: boolean;
}

const BINARY: Record<string, BinarySpec> = {
  add: { float: "v0 + v1", int: "v0 + v1" },
  sub: { float: "v0 - v1", int: "v0 - v1" },
  mul: { float: "v0 * v1", int: "v0 * v1" },
  div: { float: "v0 / v1", int: "v0 / v1" },
  pow: { float: "mg_pow(v0, v1)" },
  maximum: { float: "mg_max(v0, v1)", int: "max(v0, v1)" },
  minimum: { float: "mg_min(v0, v1)", int: "min(v0, v1)" },
  eq: { float: "v0 == v1", int: "v0 == v1", bool: "v0 == v1", compare: true },
  ne: { float: "v0 != v1", int: "v0 != v1", bool: "v0 != v1", compare: true },
  lt: { float: "v0 < v1", int: "v0 < v1", compare: true },
  le: { float: "v0 <= v1", int: "v0 <= v1", compare: true },
  gt: { float: "v0 > v1", int: "v0 > v1", compare: true },
  ge: { float: "v0 >= v1", int: "v0 >= v1", compare: true },
};

function operands(op: string, a: Operand, b: Operand): [PointwiseInput, PointwiseInput, DType] {
  if (typeof a === "number" && typeof b === "number") {
    throw new MoongradError(op, "at least one operand must be a Tensor, got two numbers");
  }
  if (typeof a !== "number") checkTensor(op, a, "a");
  if (typeof b !== "number") checkTensor(op, b, "b");
  if (a instanceof Tensor && b instanceof Tensor && a.dtype !== b.dtype) {
    throw new MoongradError(
      op,
      `operands have different dtypes: a is ${a.dtype} ${fmtShape(a.shape)}, b is ${b.dtype} ${
        fmtShape(b.shape)
      }; cast one with .cast()`,
    );
  }
  const dtype = (a instanceof Tensor ? a : b as Tensor).dtype;
  const wrap = (v: Operand): PointwiseInput => typeof v === "number" ? { scalar: v, dtype } : v;
  return [wrap(a), wrap(b), dtype];
}

function shapeOf(v: Operand): readonly number[] {
  return typeof v === "number" ? [] : v.shape;
}

function binary(op: string, a: Operand, b: Operand): Tensor {
  const [x, y, dtype] = operands(op, a, b);
  const spec = BINARY[op];
  const expr = isFloat(dtype) ? spec.float : dtype === "i32" ? spec.int : spec.bool;
  if (!expr) {
    const allowed = spec.bool ? "any dtype" : spec.int ? "f32, f16 or i32" : "f32 or f16";
    throw new MoongradError(op, `operands have dtype ${dtype}; expected ${allowed}`);
  }
  const shape = broadcastShapes(op, shapeOf(a), shapeOf(b));
  return pointwise(op, [x, y], shape, spec.compare ? "bool" : dtype, expr, MATH_WGSL);
}

type BinaryVjp = (
  g: Tensor,
  a: Operand,
  b: Operand,
  out: Tensor,
  needs: readonly boolean[],
) => [Tensor | null, Tensor | null];

function differentiable(
  op: string,
  a: Operand,
  b: Operand,
  vjp: BinaryVjp,
  save: "inputs" | "inputs+out" | "none",
): Tensor {
  const out = binary(op, a, b);
  const tensors = [a, b].filter((v): v is Tensor => v instanceof Tensor);
  const saved = save === "none" ? [] : save === "inputs" ? tensors : [...tensors, out];
  return record(out, op, tensors, (g, needs, kept) => {
    const full = [
      a instanceof Tensor && needs[0],
      b instanceof Tensor && needs[a instanceof Tensor ? 1 : 0],
    ];
    // The retained handles stand in for a, b and out (the caller may have disposed them).
    const handle = <T extends Operand>(v: T): T => {
      const i = saved.indexOf(v as unknown as Tensor);
      return (i >= 0 ? kept[i] : v) as T;
    };
    const [ga, gb] = vjp(g, handle(a), handle(b), handle(out), full);
    const grads: (Tensor | null)[] = [];
    if (a instanceof Tensor) grads.push(ga ? reduceTo(ga, a.shape, g) : null);
    if (b instanceof Tensor) grads.push(gb ? reduceTo(gb, b.shape, g) : null);
    return grads;
  }, saved);
}

/** Sums a gradient down to an input's shape, disposing the unreduced one unless it is `keep`. */
function reduceTo(g: Tensor, shape: readonly number[], keep?: Tensor): Tensor {
  const r = sumTo(g, shape);
  if (r !== g && g !== keep) g.dispose();
  return r;
}

/**
 * a + b with broadcasting.
 *
 * @example Add with broadcasting
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const col = mg.tensor([[1], [2]]); // [2, 1]
 * console.log(await mg.add(col, mg.tensor([10, 20])).toArray()); // [[11, 21], [12, 22]]
 * console.log(await col.add(0.5).toArray()); // [[1.5], [2.5]]
 * ```
 */
export const add = (a: Operand, b: Operand): Tensor =>
  differentiable("add", a, b, (g, _a, _b, _o, n) => [n[0] ? g : null, n[1] ? g : null], "none");
/**
 * a − b with broadcasting.
 *
 * @example Subtract a per-row mean
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([[1, 3], [2, 6]]);
 * console.log(await mg.sub(x, x.mean(1, true)).toArray()); // [[-1, 1], [-2, 2]]
 * ```
 */
export const sub = (a: Operand, b: Operand): Tensor =>
  differentiable(
    "sub",
    a,
    b,
    (g, _a, _b, _o, n) => [n[0] ? g : null, n[1] ? neg(g) : null],
    "none",
  );
/**
 * a × b with broadcasting.
 *
 * @example Multiply
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.mul(mg.tensor([1, 2, 3]), mg.tensor([2, 2, 0])).toArray()); // [2, 4, 0]
 * ```
 */
export const mul = (a: Operand, b: Operand): Tensor =>
  differentiable(
    "mul",
    a,
    b,
    (g, a, b, _o, n) => [n[0] ? binary("mul", g, b) : null, n[1] ? binary("mul", g, a) : null],
    "inputs",
  );
/**
 * a ÷ b with broadcasting (integer division truncates for i32).
 *
 * @example Float and integer division
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.div(mg.tensor([1, 3]), 2).toArray()); // [0.5, 1.5]
 * console.log(await mg.div(mg.tensor([7, -7], { dtype: "i32" }), 2).toArray()); // [3, -3]
 * ```
 */
export const div = (a: Operand, b: Operand): Tensor =>
  differentiable("div", a, b, (g, _a, b, out, n) => [
    n[0] ? binary("div", g, b) : null,
    n[1] ? pointwiseGrad("div_grad_b", g, out, b, "-v0 * v1 / v2") : null,
  ], "inputs+out");
/**
 * a ** b with broadcasting (float only; negative bases need integral exponents).
 *
 * @example Powers, with a tensor or a number on either side
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.pow(mg.tensor([2, 3]), 2).toArray()); // [4, 9]
 * console.log(await mg.pow(2, mg.tensor([0, 1, 3])).toArray()); // [1, 2, 8]
 * ```
 */
export const pow = (a: Operand, b: Operand): Tensor =>
  differentiable("pow", a, b, (g, a, b, out, n) => [
    n[0]
      ? pointwiseGrad(
        "pow_grad_a",
        g,
        a,
        b,
        "select(v0 * v2 * mg_pow(v1, v2 - 1.0), 0.0, v2 == 0.0)",
      )
      : null,
    n[1]
      ? pointwiseGrad(
        "pow_grad_b",
        g,
        a,
        out,
        "select(0.0, v0 * v2 * mg_log(v1), v1 > 0.0 || mg_isnan(v1))",
      )
      : null,
  ], "inputs+out");
/**
 * Elementwise maximum; NaN wins (as in PyTorch). Ties split the gradient equally; where
 * either operand is NaN both get the whole gradient (PyTorch's rule).
 *
 * @example Elementwise maximum; NaN wins
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.maximum(mg.tensor([1, 5, NaN]), mg.tensor([3, 2, 0])).toArray()); // [3, 5, NaN]
 * ```
 */
export const maximum = (a: Operand, b: Operand): Tensor =>
  differentiable("maximum", a, b, (g, a, b, _o, n) => [
    n[0] ? pointwiseGrad("max_grad", g, a, b, "v0 * mg_extremum_share(v1, v2, v1 > v2)") : null,
    n[1] ? pointwiseGrad("max_grad", g, b, a, "v0 * mg_extremum_share(v1, v2, v1 > v2)") : null,
  ], "inputs");
/**
 * Elementwise minimum; NaN wins (as in PyTorch). Ties split the gradient equally; where
 * either operand is NaN both get the whole gradient (PyTorch's rule).
 *
 * @example Elementwise minimum against a number
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.minimum(mg.tensor([1, 5, 3]), 2).toArray()); // [1, 2, 2]
 * ```
 */
export const minimum = (a: Operand, b: Operand): Tensor =>
  differentiable("minimum", a, b, (g, a, b, _o, n) => [
    n[0] ? pointwiseGrad("min_grad", g, a, b, "v0 * mg_extremum_share(v1, v2, v1 < v2)") : null,
    n[1] ? pointwiseGrad("min_grad", g, b, a, "v0 * mg_extremum_share(v1, v2, v1 < v2)") : null,
  ], "inputs");

function pointwiseGrad(name: string, g: Tensor, x: Operand, y: Operand, expr: string): Tensor {
  const wrap = (v: Operand): PointwiseInput =>
    typeof v === "number" ? { scalar: v, dtype: g.dtype } : v;
  return pointwise(name, [g, wrap(x), wrap(y)], g.shape, g.dtype, expr, MATH_WGSL);
}

/**
 * a == b (bool).
 *
 * @example Compare (bool results read back as 0 / 1)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.eq(mg.tensor([1, 2, 3]), 2).toArray()); // [0, 1, 0]
 * ```
 */
export const eq = (a: Operand, b: Operand): Tensor => binary("eq", a, b);
/**
 * a != b (bool).
 *
 * @example Not equal
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const ids = mg.tensor([5, -100, 7], { dtype: "i32" });
 * console.log(await mg.ne(ids, -100).toArray()); // [1, 0, 1]
 * ```
 */
export const ne = (a: Operand, b: Operand): Tensor => binary("ne", a, b);
/**
 * a < b (bool).
 *
 * @example Less than
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.lt(mg.tensor([1, 2, 3]), 2).toArray()); // [1, 0, 0]
 * ```
 */
export const lt = (a: Operand, b: Operand): Tensor => binary("lt", a, b);
/**
 * a <= b (bool).
 *
 * @example Less than or equal
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.le(mg.tensor([1, 2, 3]), 2).toArray()); // [1, 1, 0]
 * ```
 */
export const le = (a: Operand, b: Operand): Tensor => binary("le", a, b);
/**
 * a > b (bool).
 *
 * @example Greater than
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.gt(mg.tensor([1, 2, 3]), 2).toArray()); // [0, 0, 1]
 * ```
 */
export const gt = (a: Operand, b: Operand): Tensor => binary("gt", a, b);
/**
 * a >= b (bool).
 *
 * @example Greater than or equal, tensor against tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * console.log(await mg.ge(mg.tensor([1, 2, 3]), mg.tensor([3, 2, 1])).toArray()); // [0, 1, 1]
 * ```
 */
export const ge = (a: Operand, b: Operand): Tensor => binary("ge", a, b);

// ---- where, cast, contiguous --------------------------------------------------------------

/**
 * Picks `a` where `cond` (bool) is true and `b` elsewhere, broadcasting all three.
 *
 * @example Keep positive entries, zero the rest
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([-1, 2, -3, 4]);
 * console.log(await mg.where(x.gt(0), x, 0).toArray()); // [0, 2, 0, 4]
 * ```
 */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  checkTensor("where", cond, "cond");
  if (cond.dtype !== "bool") {
    throw new MoongradError(
      "where",
      `cond must be bool, got ${cond.dtype} ${fmtShape(cond.shape)}; compare first (e.g. x.gt(0))`,
    );
  }
  const [x, y, dtype] = operands("where", a, b);
  const shape = broadcastShapes(
    "where",
    cond.shape,
    broadcastShapes("where", shapeOf(a), shapeOf(b)),
  );
  const out = pointwise("where", [cond, x, y], shape, dtype, "select(v2, v1, v0 != 0u)");
  const tensors = [a, b].filter((v): v is Tensor => v instanceof Tensor);
  return record(out, "where", tensors, (g, needs, [c]) => {
    const grads: (Tensor | null)[] = [];
    let j = 0;
    for (const [v, pickA] of [[a, true], [b, false]] as const) {
      if (!(v instanceof Tensor)) continue;
      if (!needs[j++]) {
        grads.push(null);
        continue;
      }
      const expr = pickA ? "select(0.0, v1, v0 != 0u)" : "select(v1, 0.0, v0 != 0u)";
      grads.push(reduceTo(pointwise("where_grad", [c, g], g.shape, g.dtype, expr), v.shape));
    }
    return grads;
  }, [cond]);
}

/**
 * Converts to `dtype`: floats truncate toward zero into i32; bool is `x != 0`.
 *
 * Float → i32 on the GPU is not checked (a check would cost a readback-time flag like the
 * index check's for every cast): WGSL's conversion saturates, so values beyond the i32 range
 * clamp to the nearest f32 that fits (±2147483520 … −2147483648), and NaN gives an
 * implementation-defined value (lavapipe: −2147483648; other drivers: 0). Host data is
 * different: `tensor()`, `full()` and `arange()` refuse NaN, ±Infinity, fractions and
 * out-of-range values for i32 instead of converting them.
 *
 * @example Convert between dtypes
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([1.7, -1.7, 0]);
 * console.log(await mg.cast(x, "i32").toArray()); // [1, -1, 0]
 * console.log(await mg.cast(x, "bool").toArray()); // [1, 1, 0]
 * ```
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  checkTensor("cast", x, "x");
  if (!["f32", "f16", "i32", "bool"].includes(dtype)) {
    throw new MoongradError("cast", `unknown dtype ${dtype}; expected f32, f16, i32 or bool`);
  }
  let expr = "v0";
  if (dtype === "bool") {
    expr = x.dtype === "bool" ? "v0" : isFloat(x.dtype) ? "v0 != 0.0" : "v0 != 0";
  } else if (isFloat(dtype)) expr = "f32(v0)";
  else if (dtype === "i32") expr = "i32(v0)";
  const out = pointwise(`cast_${dtype}`, [x], x.shape, dtype, expr);
  if (!isFloat(dtype) || !isFloat(x.dtype)) return out;
  return record(out, "cast", [x], (g) => [cast(g, x.dtype)]);
}

/**
 * A contiguous copy of a strided view (a new tensor even when `x` is contiguous).
 *
 * @example Copy a transposed view into row-major order
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const t = mg.arange(6).reshape([2, 3]).transpose();
 * const c = mg.contiguous(t);
 * console.log(t.isContiguous, c.isContiguous, await c.toArray()); // false true [[0, 3], [1, 4], [2, 5]]
 * ```
 */
export function contiguous(x: Tensor): Tensor {
  checkTensor("contiguous", x, "x");
  const out = pointwise("copy", [x], x.shape, x.dtype, "v0");
  return record(out, "contiguous", [x], (g) => [g]);
}

/** `x` itself when contiguous, else a contiguous copy outside the graph; `done()` frees the copy. */
export function denseView(x: Tensor): { t: Tensor; done: () => void } {
  if (x.isContiguous) return { t: x, done: () => {} };
  const t = noGrad(() => contiguous(x));
  return { t, done: () => t.dispose() };
}
