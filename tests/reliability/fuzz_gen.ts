/**
 * Seeded generator of the chain fuzz: from one seed (mulberry32) it draws 2–6 ops over 1–3
 * differentiable inputs of rank 0–4 whose axes come from {0, 1, 2, 3, 5}, with constants,
 * bool masks and scalar operands where an op takes a second operand. It evaluates the float64
 * reference as it goes and uses the values to stay where the chain is smooth and well defined:
 *
 * - every kink (relu at 0, clamp bounds, maximum/minimum ties, max/min reduction ties) keeps a
 *   margin of 1e-3·M from the values (M = the largest magnitude in the chain so far, ≥ 1), so
 *   f32 rounding cannot move a value across it and finite differences stay on one side; a
 *   max/min over tied values first gets distinct constant offsets added (or another op);
 * - log/sqrt get a shift keeping their input ≥ 0.25, exp only sees ≤ 4, square only ≤ 30 in
 *   magnitude, div only denominators ≥ 0.3 in magnitude;
 * - mean/var over an empty axis (NaN, as in PyTorch) ends the chain; max/min over an empty
 *   axis is drawn as a probe the library must refuse (PyTorch raises);
 * - every value holds at most 1200 elements.
 */
import { NDArray, reduceAxes, size } from "../reference/ndarray.ts";
import { rng } from "../reference/linalg.ts";
import { froundFtz } from "../util.ts";
import {
  type Arg,
  type Chain,
  type Leaf,
  normAxes,
  type OpName,
  type Params,
  REF,
  refArgs,
  resolveTarget,
  type Step,
} from "./fuzz_ops.ts";

const DIMS = [0, 1, 1, 2, 2, 3, 3, 5, 5];
const CAP = 1200;

/** Draws the chain of `seed`. */
export function drawChain(seed: number): Chain {
  return new Gen(seed).chain();
}

class Gen {
  readonly r: () => number;
  values: (Leaf | Step)[] = [];
  vals: NDArray[] = [];
  steps: Step[] = [];
  inputs = 0;
  maxInputs: number;
  M = 1;
  final = false;

  constructor(readonly seed: number) {
    this.r = rng(seed);
    this.maxInputs = this.int(1, 3);
  }

  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)];
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  dim(): number {
    return this.pick(DIMS);
  }
  get tol(): number {
    return 1e-3 * this.M;
  }

  mark() {
    return {
      n: this.values.length,
      s: this.steps.length,
      inputs: this.inputs,
      M: this.M,
      final: this.final,
    };
  }
  rollback(m: ReturnType<Gen["mark"]>): void {
    this.values.length = m.n;
    this.vals.length = m.n;
    this.steps.length = m.s;
    this.inputs = m.inputs;
    this.M = m.M;
    this.final = m.final;
  }

  leaf(kind: Leaf["kind"], shape: number[], den = false): number {
    const n = size(shape);
    const data = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (kind === "mask") data[i] = this.chance(0.5) ? 1 : 0;
      else if (den) data[i] = froundFtz((this.chance(0.5) ? -1 : 1) * (0.5 + this.r()));
      else data[i] = froundFtz(-2 + 4 * this.r());
    }
    if (kind === "input") this.inputs++;
    this.values.push({ kind, shape, data });
    const v = new NDArray(data, shape);
    this.vals.push(v);
    this.bump(v);
    return this.values.length - 1;
  }

  bump(v: NDArray): void {
    for (const x of v.data) if (Number.isFinite(x)) this.M = Math.max(this.M, Math.abs(x));
  }

  /** Appends a step; null (nothing appended) when the result would be too big. */
  apply(op: OpName, args: Arg[], p: Params = {}): number | null {
    let r;
    try {
      r = REF[op](refArgs(args, this.vals), p);
    } catch {
      return null; // operands drawn independently may not broadcast together (where)
    }
    if (r.out.size > CAP) return null;
    const step: Step = { op, args, p, out: this.values.length };
    this.values.push(step);
    this.vals.push(r.out);
    this.steps.push(step);
    this.bump(r.out);
    return step.out;
  }

  probe(op: OpName, args: Arg[], p: Params): void {
    this.steps.push({ op, args, p, out: -1, probe: true });
  }

  chain(): Chain {
    let v = this.leaf("input", Array.from({ length: this.int(0, 4) }, () => this.dim()));
    const want = this.int(2, 6);
    let made = 0;
    for (let attempt = 0; made < want && attempt < 60 && !this.final; attempt++) {
      const m = this.mark();
      const next = this.step(v);
      if (next === null) {
        this.rollback(m);
        continue;
      }
      made++;
      v = next;
    }
    const out = this.vals[v];
    const weight = new Float64Array(out.size);
    for (let i = 0; i < weight.length; i++) weight[i] = froundFtz(-1 + 2 * this.r());
    return { seed: this.seed, values: this.values, steps: this.steps, out: v, weight };
  }

  /** One random op on value v: the new value's number (v itself after a probe), or null. */
  step(v: number): number | null {
    const u = this.r();
    if (u < 0.24) return this.unary(v);
    if (u < 0.44) return this.binary(v);
    if (u < 0.58) return this.reduce(v);
    if (u < 0.64) return this.apply(this.pick(["softmax", "logSoftmax"]), [v], this.axisP(v));
    if (u < 0.82) return this.layout(v);
    if (u < 0.87) return this.concat(v);
    if (u < 0.93) return this.matmul(v);
    return this.where(v);
  }

  axisP(v: number): Params {
    const r = this.vals[v].rank;
    return { axis: r === 0 ? this.pick([0, -1]) : this.int(-r, r - 1) };
  }

  // ---- operands ---------------------------------------------------------------------------

  /** A shape that broadcasts with `s` (axes dropped, set to 1, grown from 1, or prepended). */
  partnerShape(s: readonly number[]): number[] {
    const r = s.length;
    const rank = this.int(Math.max(0, r - 2), Math.min(4, r + 1));
    const out: number[] = [];
    for (let i = 0; i < rank; i++) {
      const j = i - (rank - r);
      if (j < 0) out.push(this.pick([1, 2, 3]));
      else if (s[j] === 1) out.push(this.chance(0.3) ? this.dim() : 1);
      else out.push(this.chance(0.3) ? 1 : s[j]);
    }
    return out;
  }

  broadcasts(a: readonly number[], b: readonly number[]): boolean {
    const r = Math.max(a.length, b.length);
    let n = 1;
    for (let i = 0; i < r; i++) {
      const x = a[a.length - r + i] ?? 1;
      const y = b[b.length - r + i] ?? 1;
      if (x !== y && x !== 1 && y !== 1) return false;
      n *= x === 1 ? y : x;
    }
    return n <= CAP;
  }

  /**
   * A second operand for an elementwise op on v: a new input, a constant, a scalar or an
   * earlier value (v itself included). `den`: its magnitude must stay ≥ 0.3.
   */
  operand(v: number, den: boolean, allowSelf = true): Arg {
    const s = this.vals[v].shape;
    const u = this.r();
    if (u < 0.15) {
      const x = den ? (this.chance(0.5) ? -1 : 1) * (0.5 + this.r()) : -2 + 4 * this.r();
      return { scalar: froundFtz(x) };
    }
    if (u < 0.6 && this.inputs < this.maxInputs) {
      return this.leaf("input", this.partnerShape(s), den);
    }
    if (u < 0.7) return this.leaf("const", this.partnerShape(s), den);
    const pool = this.vals.map((_x, i) => i).filter((i) => {
      const x = this.vals[i];
      const leaf = this.values[i] as Leaf;
      if (leaf.kind === "mask" || (!allowSelf && i === v)) return false;
      if (!this.broadcasts(s, x.shape)) return false;
      return !den || x.data.every((y) => Math.abs(y) >= 0.3);
    });
    return pool.length ? this.pick(pool) : this.leaf("const", this.partnerShape(s), den);
  }

  // ---- op families ------------------------------------------------------------------------

  unary(v: number): number | null {
    const x = this.vals[v];
    const lo = Math.min(...x.data);
    const hi = Math.max(...x.data);
    const absMax = Math.max(Math.abs(lo), Math.abs(hi), 0);
    const op = this.pick(
      [
        "neg",
        "exp",
        "log",
        "sqrt",
        "tanh",
        "sigmoid",
        "silu",
        "relu",
        "square",
        "clamp",
      ] as const,
    );
    switch (op) {
      case "exp":
        return x.size === 0 || hi <= 4 ? this.apply(op, [v]) : null;
      case "square":
        return x.size === 0 || absMax <= 30 ? this.apply(op, [v]) : null;
      case "log":
      case "sqrt": {
        const shift = x.size === 0 || lo >= 0.25 ? undefined : froundFtz(0.5 - lo);
        return this.apply(op, [v], { shift });
      }
      case "relu":
        return x.data.every((y) => Math.abs(y) >= this.tol) ? this.apply(op, [v]) : null;
      case "clamp": {
        const bound = () => {
          for (let t = 0; t < 8; t++) {
            const b = froundFtz(lo - 0.3 + (hi - lo + 0.6) * this.r());
            if (x.data.every((y) => Math.abs(y - b) >= this.tol)) return b;
          }
          return undefined;
        };
        if (x.size === 0) {
          return this.apply(op, [v], { lo: -1, hi: this.chance(0.5) ? 1 : undefined });
        }
        const p: Params = { lo: this.chance(0.7) ? bound() : undefined };
        p.hi = this.chance(0.7) || p.lo === undefined ? bound() : undefined;
        if (p.lo === undefined && p.hi === undefined) return null;
        return this.apply(op, [v], p);
      }
      default:
        return this.apply(op, [v]);
    }
  }

  binary(v: number): number | null {
    const op = this.pick(["add", "sub", "mul", "div", "maximum", "minimum"] as const);
    const x = this.vals[v];
    let args: Arg[];
    if (op === "div") {
      const vOk = x.data.every((y) => Math.abs(y) >= 0.3);
      args = vOk && this.chance(0.4) ? [this.operand(v, false), v] : [v, this.operand(v, true)];
    } else {
      const o = this.operand(v, false, !op.startsWith("m") || op === "mul");
      args = this.chance(0.5) ? [v, o] : [o, v];
    }
    if (op === "maximum" || op === "minimum") {
      const [a, b] = refArgs(args, this.vals);
      const gap = REF.sub([a, b], {}).out;
      if (!gap.data.every((d) => Math.abs(d) >= this.tol)) return null;
    }
    return this.apply(op, args);
  }

  where(v: number): number | null {
    if (this.chance(0.3)) return this.unaryClamp(v);
    const s = this.vals[v].shape;
    const mask = this.leaf("mask", this.partnerShape(s));
    if (!this.broadcasts(s, this.vals[mask].shape)) return null;
    const o = this.operand(v, false);
    return this.apply("where", this.chance(0.5) ? [mask, v, o] : [mask, o, v]);
  }

  unaryClamp(v: number): number | null {
    for (let t = 0; t < 4; t++) {
      const m = this.mark();
      const r = this.unary(v);
      if (r !== null && (this.values[r] as Step).op === "clamp") return r;
      this.rollback(m);
    }
    return null;
  }

  reduce(v: number): number | null {
    const x = this.vals[v];
    const op = this.pick(["sum", "mean", "max", "min", "var"] as const);
    const r = x.rank;
    let axes: number | number[] | undefined;
    if (r === 0) axes = this.pick([undefined, 0, -1]);
    else if (this.chance(0.25)) axes = undefined;
    else {
      const chosen = [...Array(r).keys()].filter(() => this.chance(0.5));
      if (chosen.length === 0) chosen.push(this.int(0, r - 1));
      const signed = chosen.map((a) => (this.chance(0.3) ? a - r : a));
      axes = signed.length === 1 && this.chance(0.5) ? signed[0] : signed;
    }
    const keepDims = this.chance(0.5);
    const norm = normAxes(axes, r);
    const count = norm.reduce((n, a) => n * x.shape[a], 1);
    const outSize = x.shape.reduce((n, d, i) => (norm.includes(i) ? n : n * d), 1);
    const p: Params = { axes, keepDims };
    if (op === "max" || op === "min") {
      if (count === 0) {
        this.probe(op, [v], p);
        return v;
      }
      let src = v;
      if (!this.uniqueExtrema(x, norm, op)) {
        const offsets = new Float64Array(x.size);
        const order = [...offsets.keys()].sort(() => this.r() - 0.5);
        order.forEach((k, i) => (offsets[k] = froundFtz(3 * this.tol * (i + 1))));
        const c = this.values.length;
        this.values.push({ kind: "const", shape: [...x.shape], data: offsets });
        this.vals.push(new NDArray(offsets, x.shape));
        const jittered = this.apply("add", [v, c]);
        if (jittered === null || !this.uniqueExtrema(this.vals[jittered], norm, op)) return null;
        src = jittered;
      }
      return this.apply(op, [src], p);
    }
    if (op === "var") p.correction = count >= 2 && this.chance(0.7) ? 1 : 0;
    if ((op === "mean" || op === "var") && count === 0 && outSize > 0) this.final = true;
    return this.apply(op, [v], op === "var" ? p : { axes, keepDims });
  }

  uniqueExtrema(x: NDArray, axes: number[], op: "max" | "min"): boolean {
    let ok = true;
    reduceAxes(x, axes, true, (vals) => {
      const sorted = [...vals].sort((a, b) => (op === "max" ? b - a : a - b));
      if (sorted.length > 1 && Math.abs(sorted[0] - sorted[1]) < this.tol) ok = false;
      return 0;
    });
    return ok;
  }

  layout(v: number): number | null {
    const x = this.vals[v];
    const r = x.rank;
    const op = this.pick(
      [
        "reshape",
        "reshape",
        "permute",
        "transpose",
        "slice",
        "slice",
        "expand",
        "unsqueeze",
        "squeeze",
        "contiguous",
      ] as const,
    );
    switch (op) {
      case "reshape":
        return this.apply(op, [v], { shape: this.reshapeTarget(x.size) });
      case "permute": {
        const perm = [...Array(r).keys()].sort(() => this.r() - 0.5);
        return this.apply(op, [v], { perm: perm.map((a) => (this.chance(0.2) ? a - r : a)) });
      }
      case "transpose": {
        const d = () => (r === 0 ? this.pick([0, -1]) : this.int(-r, r - 1));
        return this.apply(op, [v], { dims: [d(), d()] });
      }
      case "slice": {
        if (r === 0) {
          this.probe(op, [v], { axis: this.pick([0, -1]), start: 0 }); // PyTorch raises
          return v;
        }
        const axis = this.int(-r, r - 1);
        const n = x.shape[axis < 0 ? axis + r : axis];
        const start = this.int(-n - 1, n);
        const end = this.chance(0.3) ? undefined : this.int(-n - 1, n + 2);
        return this.apply(op, [v], { axis, start, end, step: this.pick([1, 1, 2, 3]) });
      }
      case "expand": {
        const lead = r < 4 && this.chance(0.4) ? [this.pick([1, 2, 3])] : [];
        const rest = x.shape.map((d) =>
          d === 1 ? (this.chance(0.7) ? this.dim() : -1) : (this.chance(0.3) ? -1 : d)
        );
        const shape = [...lead, ...rest];
        if (size(resolveTarget("expand", shape, x.shape)) > CAP) return null;
        return this.apply(op, [v], { shape });
      }
      case "unsqueeze":
        return r >= 4 ? null : this.apply(op, [v], { axis: this.int(-r - 1, r) });
      case "squeeze": {
        const ones = x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0);
        if (r === 0) return this.apply(op, [v], { axis: this.pick([undefined, 0, -1]) });
        if (ones.length === 0 || this.chance(0.3)) return this.apply(op, [v], {});
        const a = this.pick(ones);
        return this.apply(op, [v], { axis: this.chance(0.3) ? a - r : a });
      }
      default:
        return this.apply(op, [v]);
    }
  }

  /** A random shape of rank 0–4 holding n elements, sometimes with one -1. */
  reshapeTarget(n: number): number[] {
    for (let t = 0; t < 20; t++) {
      const rank = this.int(n === 1 ? 0 : 1, 4);
      const shape = new Array<number>(rank).fill(1);
      if (n === 0) {
        for (let i = 0; i < rank; i++) shape[i] = this.pick([1, 2, 3]);
        const z = this.int(0, rank - 1);
        shape[z] = 0;
        if (this.chance(0.3)) shape[z] = -1; // PyTorch infers 0 from the other (non-zero) axes
        return shape;
      }
      let rest = n;
      for (const f of factors(n)) {
        shape[this.int(0, rank - 1)] *= f;
        rest /= f;
      }
      if (rest !== 1 || shape.some((d) => d > 25)) continue;
      if (rank > 0 && this.chance(0.3)) shape[this.int(0, rank - 1)] = -1;
      return shape;
    }
    return [n];
  }

  concat(v: number): number | null {
    const x = this.vals[v];
    const r = x.rank;
    if (r === 0) return null;
    const axis = this.int(-r, r - 1);
    const ax = axis < 0 ? axis + r : axis;
    const parts: Arg[] = [v];
    for (let k = this.int(1, 2); k > 0; k--) {
      const shape = [...x.shape];
      shape[ax] = this.pick([0, 1, 2, 3]);
      const u = this.r();
      let part: number;
      if (u < 0.2 && shape[ax] === x.shape[ax]) part = v;
      else if (u < 0.75 && this.inputs < this.maxInputs) part = this.leaf("input", shape);
      else part = this.leaf("const", shape);
      parts.splice(this.int(0, parts.length), 0, part);
    }
    return this.apply("concat", parts, { axis });
  }

  matmul(v: number): number | null {
    const s = this.vals[v].shape;
    const r = s.length;
    if (r === 0) return null;
    const leafOf = (shape: number[]) =>
      this.inputs < this.maxInputs && this.chance(0.75)
        ? this.leaf("input", shape)
        : this.leaf("const", shape);
    const batch = (b: number[]) => (this.chance(0.5) ? [] : this.partnerShape(b).slice(-2));
    if (this.chance(0.65) || r === 1) {
      // v on the left: [..., M, K] @ [K] | [K, N] | [batch, K, N]
      const K = s[r - 1];
      const u = this.r();
      const shape = u < 0.2
        ? [K]
        : [...(r > 2 || u < 0.5 ? batch(s.slice(0, -2)) : []), K, this.dim()];
      if (r === 1 && shape.length > 2) shape.splice(0, shape.length - 3);
      return this.apply("matmul", [v, leafOf(shape)]);
    }
    // v on the right: [batch, P, K] @ [..., K, N]
    const K = s[r - 2];
    const shape = [...batch(s.slice(0, -2)), this.dim(), K];
    if (!this.broadcasts(shape.slice(0, -2), s.slice(0, -2))) return null;
    return this.apply("matmul", [leafOf(shape), v]);
  }
}

function factors(n: number): number[] {
  const out: number[] = [];
  for (let p = 2; n > 1; p++) {
    while (n % p === 0) {
      out.push(p);
      n /= p;
    }
  }
  return out;
}
