/**
 * Float64 references for the elementwise ops and the view ops: forward functions, their
 * vector-Jacobian products (vjps), and the float64 side of "strided view as input" test
 * cases. Conventions at kinks follow the library: sign(0) = 0, relu'(0) = 0, and ties of
 * maximum/minimum split the gradient in half. NaN and ±Inf follow PyTorch (NaN wins maximum
 * and minimum, relu and clamp keep it).
 */
import { broadcastTo, map, NDArray, permute, ravel, size, sumTo, unravel, zip } from "./ndarray.ts";

/** erf(x) in float64: the all-positive series 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(2n+1)!!, |err| < 1e-15. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax > 6) return Math.sign(x);
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 200 && term > 1e-17 * sum; n++) {
    term *= (2 * ax * ax) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * Math.exp(-ax * ax) * sum;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const GELU_C = Math.sqrt(2 / Math.PI);
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** One unary op: its forward, its derivative, and the input interval tests draw from. */
export interface UnaryRef {
  /** Forward in float64. */
  f: (x: number) => number;
  /** Derivative in float64 (library convention at kinks). */
  df: (x: number) => number;
  /** Input interval [lo, hi] the op is tested on (domain-restricted where needed). */
  domain: [number, number];
  /** Points where f is not differentiable (numeric checks keep away from them). */
  kinks?: number[];
}

/** Float64 references of every unary float op, keyed by the library's op name. */
export const UNARY: Record<string, UnaryRef> = {
  neg: { f: (x) => -x, df: () => -1, domain: [-3, 3] },
  abs: { f: Math.abs, df: (x) => Math.sign(x), domain: [-3, 3], kinks: [0] },
  exp: { f: Math.exp, df: Math.exp, domain: [-4, 4] },
  log: { f: Math.log, df: (x) => 1 / x, domain: [0.05, 8] },
  sqrt: { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x), domain: [0.05, 8] },
  rsqrt: { f: (x) => 1 / Math.sqrt(x), df: (x) => -0.5 * x ** -1.5, domain: [0.05, 8] },
  sin: { f: Math.sin, df: Math.cos, domain: [-4, 4] },
  cos: { f: Math.cos, df: (x) => -Math.sin(x), domain: [-4, 4] },
  tanh: { f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2, domain: [-4, 4] },
  sigmoid: { f: sigmoid, df: (x) => sigmoid(x) * (1 - sigmoid(x)), domain: [-8, 8] },
  silu: {
    f: (x) => x * sigmoid(x),
    df: (x) => sigmoid(x) * (1 + x * (1 - sigmoid(x))),
    domain: [-8, 8],
  },
  gelu: {
    f: (x) => 0.5 * x * (1 + erf(x * SQRT1_2)),
    df: (x) => 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x),
    domain: [-5, 5],
  },
  gelu_tanh: {
    f: (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x ** 3))),
    df: (x) => {
      const t = Math.tanh(GELU_C * (x + 0.044715 * x ** 3));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x);
    },
    domain: [-5, 5],
  },
  relu: {
    f: (x) => Math.max(x, 0),
    // PyTorch passes the gradient through at NaN (threshold_backward tests result <= 0).
    df: (x) => (x > 0 || Number.isNaN(x) ? 1 : 0),
    domain: [-3, 3],
    kinks: [0],
  },
  square: { f: (x) => x * x, df: (x) => 2 * x, domain: [-3, 3] },
};

/** Reference vjp of a unary op: upstream ⊙ f'(x). */
export function unaryVjp(ref: UnaryRef, x: NDArray, g: NDArray): NDArray {
  return zip([g, x], (gi, xi) => gi * ref.df(xi));
}

/** One binary op: forward and partial derivatives (library convention at ties). */
export interface BinaryRef {
  /** Forward in float64. */
  f: (a: number, b: number) => number;
  /** ∂f/∂a. */
  da: (a: number, b: number) => number;
  /** ∂f/∂b. */
  db: (a: number, b: number) => number;
}

const tieSplit = (win: boolean, tie: boolean) => (tie ? 0.5 : win ? 1 : 0);
/** PyTorch's maximum/minimum vjp: where either operand is NaN, both get the whole gradient. */
const nanShare = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? 1 : null);

/** Float64 references of the differentiable binary ops. */
export const BINARY: Record<string, BinaryRef> = {
  add: { f: (a, b) => a + b, da: () => 1, db: () => 1 },
  sub: { f: (a, b) => a - b, da: () => 1, db: () => -1 },
  mul: { f: (a, b) => a * b, da: (_a, b) => b, db: (a) => a },
  div: { f: (a, b) => a / b, da: (_a, b) => 1 / b, db: (a, b) => -a / (b * b) },
  pow: {
    f: (a, b) => (a === 1 ? 1 : a ** b), // PyTorch: pow(1, NaN) = 1 (JS gives NaN)
    da: (a, b) => (b === 0 ? 0 : b * a ** (b - 1)),
    db: (a, b) => (a > 0 ? a ** b * Math.log(a) : 0),
  },
  maximum: {
    f: Math.max,
    da: (a, b) => nanShare(a, b) ?? tieSplit(a > b, a === b),
    db: (a, b) => nanShare(a, b) ?? tieSplit(b > a, a === b),
  },
  minimum: {
    f: Math.min,
    da: (a, b) => nanShare(a, b) ?? tieSplit(a < b, a === b),
    db: (a, b) => nanShare(a, b) ?? tieSplit(b < a, a === b),
  },
};

/** Reference vjp of a broadcasting binary op: (sumTo(g ⊙ ∂f/∂a), sumTo(g ⊙ ∂f/∂b)). */
export function binaryVjp(ref: BinaryRef, a: NDArray, b: NDArray, g: NDArray): [NDArray, NDArray] {
  const ga = zip([g, a, b], (gi, ai, bi) => gi * ref.da(ai, bi));
  const gb = zip([g, a, b], (gi, ai, bi) => gi * ref.db(ai, bi));
  return [sumTo(ga, a.shape), sumTo(gb, b.shape)];
}

/** torch.clamp(x, lo, hi) = min(max(x, lo), hi); NaN stays NaN. */
export function clampRef(x: NDArray, lo = -Infinity, hi = Infinity): NDArray {
  return map(x, (v) => (Number.isNaN(v) ? v : Math.min(Math.max(v, lo), hi)));
}

/** vjp of clamp (PyTorch): the upstream where lo ≤ x ≤ hi, 0 elsewhere and at NaN. */
export function clampVjp(x: NDArray, g: NDArray, lo = -Infinity, hi = Infinity): NDArray {
  return zip([g, x], (gi, v) => (v >= lo && v <= hi ? gi : 0));
}

/** Float64 comparisons, as 0/1. */
export const COMPARE: Record<string, (a: number, b: number) => boolean> = {
  eq: (a, b) => a === b,
  ne: (a, b) => a !== b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
};

/** where(cond, a, b) with broadcasting of all three. */
export function whereRef(cond: NDArray, a: NDArray, b: NDArray): NDArray {
  return zip([cond, a, b], (c, x, y) => (c !== 0 ? x : y));
}

/** vjp of where for a and b: the upstream routed by cond, summed to each input's shape. */
export function whereVjp(cond: NDArray, a: NDArray, b: NDArray, g: NDArray): [NDArray, NDArray] {
  const ga = zip([cond, g], (c, gi) => (c !== 0 ? gi : 0));
  const gb = zip([cond, g], (c, gi) => (c !== 0 ? 0 : gi));
  return [sumTo(ga, a.shape), sumTo(gb, b.shape)];
}

// ---- views ------------------------------------------------------------------------------

/** Elements start, start+step, … (< end) along `axis` (start/end already resolved). */
export function sliceRef(
  x: NDArray,
  axis: number,
  start: number,
  end: number,
  step: number,
): NDArray {
  const len = Math.max(0, Math.ceil((end - start) / step));
  const shape = x.shape.map((d, i) => (i === axis ? len : d));
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) {
    const c = unravel(i, shape);
    c[axis] = start + c[axis] * step;
    out[i] = x.data[ravel(c, x.shape)];
  }
  return new NDArray(out, shape);
}

/** vjp of sliceRef: the upstream scattered into zeros of the input's shape. */
export function sliceVjp(
  inShape: readonly number[],
  axis: number,
  start: number,
  step: number,
  g: NDArray,
): NDArray {
  const out = new Float64Array(size(inShape));
  for (let i = 0; i < g.size; i++) {
    const c = unravel(i, g.shape);
    c[axis] = start + c[axis] * step;
    out[ravel(c, inShape)] += g.data[i];
  }
  return new NDArray(out, inShape);
}

/** How a test input is presented to an op: plain, or as a strided view of a base tensor. */
export type ViewKind = "plain" | "transposed" | "sliced" | "expanded";

/** A test input of logical `shape` built as a `kind` view of a base of `baseShape`. */
export interface ViewCase {
  /** How the view is made. */
  kind: ViewKind;
  /** Shape the op sees. */
  shape: number[];
  /** Shape of the base tensor the view is taken from. */
  baseShape: number[];
  /** Axis sliced (step 2 from 1) or expanded (from size 1). */
  axis: number;
}

/**
 * The view case for logical `shape`: transposed = all axes reversed; sliced = every second
 * element from 1 along `axis` of a base 2n+1 long (non-zero offset); expanded = `axis`
 * broadcast from size 1 (stride 0). Rank 0 is always plain.
 */
export function viewCase(kind: ViewKind, shape: readonly number[], axisSeed: number): ViewCase {
  const s = [...shape];
  if (s.length === 0) return { kind: "plain", shape: s, baseShape: s, axis: 0 };
  const axis = axisSeed % s.length;
  switch (kind) {
    case "plain":
      return { kind, shape: s, baseShape: s, axis };
    case "transposed":
      return { kind, shape: s, baseShape: [...s].reverse(), axis };
    case "sliced":
      return { kind, shape: s, baseShape: s.map((d, i) => (i === axis ? 2 * d + 1 : d)), axis };
    case "expanded":
      return { kind, shape: s, baseShape: s.map((d, i) => (i === axis ? 1 : d)), axis };
  }
}

/** The logical values a view case shows, from its base values. */
export function viewForward(c: ViewCase, base: NDArray): NDArray {
  const rev = c.shape.map((_, i) => c.shape.length - 1 - i);
  switch (c.kind) {
    case "plain":
      return base;
    case "transposed":
      return permute(base, rev);
    case "sliced":
      return sliceRef(base, c.axis, 1, c.baseShape[c.axis], 2);
    case "expanded":
      return broadcastTo(base, c.shape);
  }
}

/** The gradient of a view case's base from the gradient of its logical values. */
export function viewVjp(c: ViewCase, g: NDArray): NDArray {
  const rev = c.shape.map((_, i) => c.shape.length - 1 - i);
  switch (c.kind) {
    case "plain":
      return g;
    case "transposed":
      return permute(g, rev);
    case "sliced":
      return sliceVjp(c.baseShape, c.axis, 1, 2, g);
    case "expanded":
      return sumTo(g, c.baseShape);
  }
}

/** Moves every value at distance < `gap` from a kink to `kink + 2·gap` (for finite differences). */
export function awayFromKinks(x: NDArray, kinks: readonly number[] = [], gap = 1e-3): NDArray {
  return map(x, (v) => {
    for (const k of kinks) if (Math.abs(v - k) < gap) return k + 2 * gap;
    return v;
  });
}
