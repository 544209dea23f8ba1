/**
 * Fused optimizer kernels: one dispatch per parameter for SGD, AdamW and Muon's momentum and
 * apply steps, plus the pieces of Newton–Schulz orthogonalisation (per-matrix Frobenius
 * normalisation, a symmetric rank-k "gram" product that computes only the upper triangle of
 * tiles and mirrors them, and a non-finite gradient check). Parameters, gradients and state
 * are read and written in place through their offsets; hyper-parameters travel as kernel
 * parameters, so changing a learning rate never compiles a new pipeline.
 *
 * These are low-level: they check what they need (contiguity, equal sizes, f32) and assume
 * the optimizer has validated the rest.
 */
import { fmtShape, MoongradError } from "../core/errors.ts";
import { kernel, Params } from "../core/kernel.ts";
import { dispatch } from "../core/runtime.ts";
import { Tensor } from "../core/tensor.ts";
import { grid1d, linearId } from "./grid.ts";

const WG = 256;

function needContiguousF32(op: string, what: string, t: Tensor, n: number): void {
  if (t.dtype !== "f32") {
    throw new MoongradError(op, `${what} must be f32, got ${t.dtype} ${fmtShape(t.shape)}`);
  }
  if (!t.isContiguous) {
    throw new MoongradError(op, `${what} must be contiguous, got strides [${t.strides}]`);
  }
  if (t.size !== n) {
    throw new MoongradError(op, `${what} has ${t.size} elements ${fmtShape(t.shape)}, need ${n}`);
  }
}

/** Hyper-parameters of one SGD update (PyTorch semantics). */
export interface SgdKernelArgs {
  /** Learning rate. */
  lr: number;
  /** Momentum factor μ (0: plain SGD, no buffer). */
  momentum: number;
  /** Dampening of the gradient term added to the buffer (after the first step). */
  dampening: number;
  /** L2 weight decay added to the gradient (coupled, as in torch.optim.SGD). */
  weightDecay: number;
  /** Nesterov momentum: step along g + μ·buf instead of buf. */
  nesterov: boolean;
  /** True on the buffer's first update: buf = g (no dampening), as PyTorch does. */
  first: boolean;
}

/**
 * One fused SGD step, in place: g' = g + wd·p; buf = first ? g' : μ·buf + (1−dampening)·g';
 * d = nesterov ? g' + μ·buf : buf (or g' without momentum); p −= lr·d.
 * `buf` is null when momentum is 0.
 */
export function sgdUpdate(p: Tensor, g: Tensor, buf: Tensor | null, a: SgdKernelArgs): void {
  const n = p.size;
  needContiguousF32("sgd", "param", p, n);
  needContiguousF32("sgd", "grad", g, n);
  if (buf) needContiguousF32("sgd", "momentum buffer", buf, n);
  if (n === 0) return;
  const mom = buf !== null;
  const k = kernel({
    name: "sgd_update",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "G", type: "f32", access: "read" },
      ...(mom ? [{ name: "BUF", type: "f32", access: "read_write" as const }] : []),
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let ip = prm(1u) + i;
  let p = P[ip];
  var d = G[prm(2u) + i] + prmf(5u) * p;
  ${
      mom
        ? `let ib = prm(3u) + i;
  var b = d;
  if (prm(8u) == 0u) { b = prmf(6u) * BUF[ib] + (1.0 - prmf(7u)) * d; }
  BUF[ib] = b;
  if (prm(9u) != 0u) { d = d + prmf(6u) * b; } else { d = b; }`
        : ""
    }
  P[ip] = p - prmf(4u) * d;`,
  });
  const prm = new Params().u(n, p.offset, g.offset, buf?.offset ?? 0)
    .f(a.lr, a.weightDecay, a.momentum, a.dampening).u(a.first ? 1 : 0, a.nesterov ? 1 : 0);
  const bufs = [p.storage("sgd").buf, g.storage("sgd").buf];
  if (buf) bufs.push(buf.storage("sgd").buf);
  dispatch(k, bufs, prm.words, grid1d(n, WG));
}

/** Hyper-parameters of one AdamW update, with the bias corrections precomputed on the host. */
export interface AdamWKernelArgs {
  /** Learning rate. */
  lr: number;
  /** β₁ (first-moment decay). */
  beta1: number;
  /** β₂ (second-moment decay). */
  beta2: number;
  /** ε added to √v̂. */
  eps: number;
  /** Decoupled weight decay: p ← p·(1 − lr·wd) before the Adam step. */
  weightDecay: number;
  /** 1 − β₁^t for this parameter's step t (1 disables the correction). */
  biasCorrection1: number;
  /** 1 − β₂^t for this parameter's step t. */
  biasCorrection2: number;
}

/**
 * One fused AdamW step, in place (torch.optim.AdamW's arithmetic): p ← p·(1 − lr·wd);
 * m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε).
 */
export function adamwUpdate(p: Tensor, g: Tensor, m: Tensor, v: Tensor, a: AdamWKernelArgs): void {
  const n = p.size;
  needContiguousF32("adamw", "param", p, n);
  needContiguousF32("adamw", "grad", g, n);
  needContiguousF32("adamw", "exp_avg", m, n);
  needContiguousF32("adamw", "exp_avg_sq", v, n);
  if (n === 0) return;
  const k = kernel({
    name: "adamw_update",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "G", type: "f32", access: "read" },
      { name: "MM", type: "f32", access: "read_write" },
      { name: "VV", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let ip = prm(1u) + i; let im = prm(3u) + i; let iv = prm(4u) + i;
  let g = G[prm(2u) + i];
  let b1 = prmf(5u); let b2 = prmf(6u);
  let m = b1 * MM[im] + (1.0 - b1) * g;
  let v = b2 * VV[iv] + (1.0 - b2) * g * g;
  MM[im] = m;
  VV[iv] = v;
  let p = P[ip] * prmf(7u);
  P[ip] = p - prmf(8u) * m / (sqrt(v) / prmf(9u) + prmf(10u));`,
  });
  const prm = new Params().u(n, p.offset, g.offset, m.offset, v.offset).f(
    a.beta1,
    a.beta2,
    1 - a.lr * a.weightDecay,
    a.lr / a.biasCorrection1,
    Math.sqrt(a.biasCorrection2),
    a.eps,
  );
  const bufs = [p, g, m, v].map((t) => t.storage("adamw").buf);
  dispatch(k, bufs, prm.words, grid1d(n, WG));
}

/**
 * Muon's momentum, fused: M ← μ·M + s·G (s = 1 for the sum form, 1 − μ for the EMA form);
 * returns U = s·G + μ·M (Nesterov) in a new tensor, or null when `nesterov` is false (then
 * U is M itself).
 */
export function muonMomentum(
  g: Tensor,
  m: Tensor,
  mu: number,
  gradScale: number,
  nesterov: boolean,
): Tensor | null {
  const n = m.size;
  needContiguousF32("muon", "grad", g, n);
  needContiguousF32("muon", "momentum buffer", m, n);
  const u = nesterov ? Tensor.empty(m.shape, "f32") : null;
  if (n === 0) return u;
  const k = kernel({
    name: "muon_momentum",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "MM", type: "f32", access: "read_write" },
      ...(u ? [{ name: "U", type: "f32", access: "read_write" as const }] : []),
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let g = prmf(4u) * G[prm(1u) + i];
  let m = prmf(3u) * MM[prm(2u) + i] + g;
  MM[prm(2u) + i] = m;
  ${u ? "U[i] = g + prmf(3u) * m;" : ""}`,
  });
  const prm = new Params().u(n, g.offset, m.offset).f(mu, gradScale);
  const bufs = [g.storage("muon").buf, m.storage("muon").buf];
  if (u) bufs.push(u.storage("muon").buf);
  dispatch(k, bufs, prm.words, grid1d(n, WG));
  return u;
}

/** Muon's apply step, fused and in place: p ← p·(1 − lr·wd) − lr·scale·O. */
export function muonApply(p: Tensor, o: Tensor, lr: number, weightDecay: number, scale: number) {
  const n = p.size;
  needContiguousF32("muon", "param", p, n);
  needContiguousF32("muon", "orthogonalised update", o, n);
  if (n === 0) return;
  const k = kernel({
    name: "muon_apply",
    bindings: [
      { name: "P", type: "f32", access: "read_write" },
      { name: "O", type: "f32", access: "read" },
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let ip = prm(1u) + i;
  P[ip] = P[ip] * prmf(3u) - prmf(4u) * O[prm(2u) + i];`,
  });
  const prm = new Params().u(n, p.offset, o.offset).f(1 - lr * weightDecay, lr * scale);
  dispatch(k, [p.storage("muon").buf, o.storage("muon").buf], prm.words, grid1d(n, WG));
}

/**
 * Per-matrix Frobenius normalisation for Newton–Schulz: `g` is a contiguous f32
 * [batch, A, B]; returns X = G / (‖G‖_F + eps) per matrix, as [batch, A, B], or transposed
 * to [batch, B, A] when `transpose` is set (the normalising copy absorbs the transpose).
 */
export function frobeniusNormalize(g: Tensor, eps: number, transpose: boolean): Tensor {
  if (g.rank !== 3) {
    throw new MoongradError("newtonSchulz", `expected [batch, A, B], got ${fmtShape(g.shape)}`);
  }
  const [nb, A, B] = g.shape;
  needContiguousF32("newtonSchulz", "input", g, nb * A * B);
  const out = Tensor.empty(transpose ? [nb, B, A] : [nb, A, B], "f32");
  if (out.size === 0) return out;
  const ss = Tensor.empty([nb], "f32");
  // Sum of squares: one workgroup per matrix, a strided loop then a tree in workgroup memory.
  const red = kernel({
    name: "ns_sumsq",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "S", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    prelude: `var<workgroup> part: array<f32, ${WG}>;`,
    body: `
  let b = wid.y * nwg.x + wid.x;
  let len = prm(0u);
  let base = prm(1u) + b * len;
  var acc = 0.0;
  for (var i = lidx; i < len; i += ${WG}u) { let v = G[base + i]; acc = fma(v, v, acc); }
  part[lidx] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lidx < s) { part[lidx] += part[lidx + s]; }
    workgroupBarrier();
  }
  if (lidx == 0u && b < prm(2u)) { S[b] = part[0]; }`,
  });
  const gbuf = g.storage("newtonSchulz").buf;
  const sbuf = ss.storage("newtonSchulz").buf;
  dispatch(red, [gbuf, sbuf], new Params().u(A * B, g.offset, nb).words, grid1d(nb, 1));
  const scale = kernel({
    name: "ns_normalize",
    bindings: [
      { name: "G", type: "f32", access: "read" },
      { name: "S", type: "f32", access: "read" },
      { name: "X", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let A = prm(2u); let B = prm(3u);
  let b = i / (A * B);
  let r = i % (A * B);
  var src = i;
  if (prm(4u) != 0u) {
    // X[b, c, a] = G[b, a, c]: i walks the output [B, A] row-major.
    let c = r / A; let a = r % A;
    src = b * A * B + a * B + c;
  }
  X[i] = G[prm(1u) + src] / (sqrt(S[b]) + prmf(5u));`,
  });
  const n = out.size;
  const prm = new Params().u(n, g.offset, A, B, transpose ? 1 : 0).f(eps);
  dispatch(scale, [gbuf, sbuf, out.storage("newtonSchulz").buf], prm.words, grid1d(n, WG));
  ss.dispose();
  return out;
}

/** Tiling of the gram kernel's vec4 path: a (wgY·tm)×(wgX·tn) tile per workgroup, square. */
export interface GramConfig {
  /** Threads per workgroup along columns. */
  wgX: number;
  /** Threads per workgroup along rows. */
  wgY: number;
  /** Rows per thread (register tile height). */
  tm: number;
  /** Columns per thread, a multiple of 4 (register tile width, as vec4 groups). */
  tn: number;
}

/**
 * Default gram tiling: 64×64 tiles of 8×16-element register blocks, the shape the CPU matmul
 * config found fastest on llvmpipe (vec4 FMAs along a row of B).
 */
export const GRAM_CONFIG: Readonly<GramConfig> = Object.freeze({ wgX: 4, wgY: 8, tm: 8, tn: 16 });

/** Options of `gram`: the epilogue terms and a precomputed transpose. */
export interface GramOptions {
  /** Scale of X·Xᵀ (default 1). */
  alpha?: number;
  /** A contiguous symmetric [batch, R, R] term added with weight `beta`. */
  d?: Tensor | null;
  /** Weight of `d` (default 0). */
  beta?: number;
  /** Added to the diagonal (default 0). */
  gamma?: number;
  /** X is itself symmetric (square), so Xᵀ = X and no transposed copy is needed. */
  symmetricInput?: boolean;
  /** Tiling of the vec4 path. */
  config?: GramConfig;
}

/**
 * Symmetric rank-k product with a fused epilogue, per matrix of a batch:
 * C = α·X·Xᵀ + β·D + γ·I for a contiguous f32 `x` [batch, R, K] and an optional contiguous
 * symmetric `d` [batch, R, R]. Only the tiles on or above the diagonal are computed; each
 * off-diagonal tile also writes its mirror, so about half the multiply-adds of a general
 * product. When R and K are multiples of 4 the kernel reads rows of X as vec4 along k and
 * rows of Xᵀ as vec4 along j (vec4 FMAs); Xᵀ is X itself when `symmetricInput`, else a
 * transposed copy made here (O(R·K), small next to the O(R²·K) product). Other sizes use a
 * scalar kernel that reads both operands from X along k.
 */
export function gram(x: Tensor, options: GramOptions = {}): Tensor {
  if (x.rank !== 3) {
    throw new MoongradError("gram", `expected x [batch, R, K], got ${fmtShape(x.shape)}`);
  }
  const [nb, R, K] = x.shape;
  needContiguousF32("gram", "x", x, nb * R * K);
  const d = options.d ?? null;
  if (d) needContiguousF32("gram", "d", d, nb * R * R);
  if (options.symmetricInput && R !== K) {
    throw new MoongradError("gram", `symmetricInput needs a square x, got ${fmtShape(x.shape)}`);
  }
  const out = Tensor.empty([nb, R, R], "f32");
  if (out.size === 0) return out;
  const vec = K % 4 === 0 && R % 4 === 0 && x.offset % 4 === 0;
  let xt: Tensor | null = null;
  if (vec && !options.symmetricInput) xt = transposeCopy(x);
  const b = xt ?? x;
  // A tensor bound twice would be two overlapping writable ranges (all bindings are
  // read_write; core/kernel.ts), so X's other roles (Xᵀ = X, D = X in Newton–Schulz) read
  // from X's binding instead.
  const xbuf = x.storage("gram").buf;
  const bIsA = vec && b.storage("gram").buf === xbuf;
  const dIsA = d !== null && d.storage("gram").buf === xbuf;
  const k = vec
    ? gramVecKernel(options.config ?? GRAM_CONFIG, d !== null, bIsA, dIsA)
    : gramScalarKernel(d !== null, dIsA);
  const c = options.config ?? GRAM_CONFIG;
  const T = vec ? c.wgY * c.tm : 16;
  const tiles = Math.ceil(R / T);
  const prm = new Params().u(R, K, x.offset, d?.offset ?? 0, b.offset).f(
    options.alpha ?? 1,
    options.beta ?? 0,
    options.gamma ?? 0,
  );
  const bufs = [xbuf];
  if (vec && !bIsA) bufs.push(b.storage("gram").buf);
  if (d && !dIsA) bufs.push(d.storage("gram").buf);
  bufs.push(out.storage("gram").buf);
  dispatch(k, bufs, prm.words, [tiles, tiles, nb]);
  xt?.dispose();
  return out;
}

/** A contiguous [batch, K, R] copy of a contiguous [batch, R, K] tensor. */
function transposeCopy(x: Tensor): Tensor {
  const [nb, R, K] = x.shape;
  const out = Tensor.empty([nb, K, R], "f32");
  const k = kernel({
    name: "gram_transpose",
    bindings: [
      { name: "X", type: "f32", access: "read" },
      { name: "Y", type: "f32", access: "read_write" },
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  let R = prm(1u); let K = prm(2u);
  let b = i / (R * K); let r = i % (R * K);
  let kk = r / R; let row = r % R;
  Y[i] = X[prm(3u) + b * R * K + row * K + kk];`,
  });
  const n = out.size;
  dispatch(
    k,
    [x.storage("gram").buf, out.storage("gram").buf],
    new Params().u(n, R, K, x.offset)
      .words,
    grid1d(n, WG),
  );
  return out;
}

/**
 * The mirrored epilogue shared by both gram kernels: value v at (i, j), i <= j. `readD` reads
 * element `idx` of D (from D, or from X's binding when D is X).
 */
function gramStore(hasD: boolean, acc: string, readD = (idx: string) => `D[${idx}]`): string {
  return `{
      var v = alpha * ${acc};
      ${hasD ? `v += beta * ${readD("db + i * R + j")};` : ""}
      if (i == j) { v += gamma; }
      C[cb + i * R + j] = v;
      C[cb + j * R + i] = v;
    }`;
}

const GRAM_HEAD = `let ti = wid.x; let tj = wid.y; let bi = wid.z;
  if (ti > tj) { return; }
  let R = prm(0u); let K = prm(1u);
  let cb = bi * R * R;
  let db = prm(3u) + cb;
  let alpha = prmf(5u); let beta = prmf(6u); let gamma = prmf(7u);`;

/** Element `idx` of X read through its vec4 binding A. */
const readA4 = (idx: string) => `A[(${idx}) / 4u][(${idx}) % 4u]`;

/**
 * Vec4 gram kernel: A = X rows as vec4 along k, B = Xᵀ rows as vec4 along j. `bIsA`: Xᵀ is X
 * (read through A at B's offset); `dIsA`: D is X (read through A as scalars).
 */
function gramVecKernel(c: GramConfig, hasD: boolean, bIsA = false, dIsA = false) {
  const { wgX, wgY, tm, tn } = c;
  if (wgY * tm !== wgX * tn || tn % 4 !== 0) {
    throw new MoongradError("gram", `tiles must be square with tn % 4 == 0: ${JSON.stringify(c)}`);
  }
  const T = wgY * tm;
  const rows = [...Array(tm).keys()];
  const groups = [...Array(tn / 4).keys()];
  const L: string[] = [GRAM_HEAD];
  L.push(`  let xa = (prm(2u) + bi * R * K) / 4u;
  let xb = (prm(4u) + bi * R * K) / 4u;
  let R4 = R / 4u;
  let i0 = ti * ${T}u + (lidx / ${wgX}u) * ${tm}u;
  let j0 = tj * ${T}u + (lidx % ${wgX}u) * ${tn}u;`);
  for (const r of rows) L.push(`  let pa${r} = xa + min(i0 + ${r}u, R - 1u) * (K / 4u);`);
  for (const g of groups) L.push(`  let pb${g} = xb + min(j0 + ${4 * g}u, R - 4u) / 4u;`);
  for (const r of rows) for (const g of groups) L.push(`  var c${r}_${g} = vec4<f32>(0.0);`);
  L.push(`  for (var k = 0u; k < K / 4u; k++) {`);
  for (const r of rows) L.push(`    let a${r} = A[pa${r} + k];`);
  for (let kk = 0; kk < 4; kk++) {
    for (const g of groups) {
      L.push(`    let b${kk}_${g} = ${bIsA ? "A" : "B"}[pb${g} + (4u * k + ${kk}u) * R4];`);
    }
    for (const r of rows) {
      for (const g of groups) {
        L.push(`    c${r}_${g} = fma(vec4<f32>(a${r}.${"xyzw"[kk]}), b${kk}_${g}, c${r}_${g});`);
      }
    }
  }
  L.push("  }");
  for (const r of rows) {
    for (const g of groups) {
      for (let l = 0; l < 4; l++) {
        L.push(`  { let i = i0 + ${r}u; let j = j0 + ${4 * g + l}u;
    if (i < R && j < R && (ti != tj || i <= j)) ${
          gramStore(hasD, `c${r}_${g}.${"xyzw"[l]}`, dIsA ? readA4 : undefined)
        } }`);
      }
    }
  }
  return kernel({
    name: "gram",
    bindings: [
      { name: "A", type: "vec4<f32>", access: "read" },
      ...(bIsA ? [] : [{ name: "B", type: "vec4<f32>", access: "read" as const }]),
      ...(hasD && !dIsA ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      { name: "C", type: "f32", access: "read_write" },
    ],
    workgroupSize: [wgX * wgY],
    body: L.join("\n"),
  });
}

/**
 * Scalar gram kernel for sizes not multiple of 4: 16×16 tiles, 4×4 dots along k per thread.
 * `dIsA`: D is X (read through A).
 */
function gramScalarKernel(hasD: boolean, dIsA = false) {
  const t = 4;
  const idx = [...Array(t).keys()];
  const L: string[] = [GRAM_HEAD];
  L.push(`  let xb = prm(2u) + bi * R * K;
  let i0 = ti * 16u + (lidx / 4u) * 4u;
  let j0 = tj * 16u + (lidx % 4u) * 4u;`);
  for (const r of idx) L.push(`  let pa${r} = xb + min(i0 + ${r}u, R - 1u) * K;`);
  for (const c of idx) L.push(`  let pb${c} = xb + min(j0 + ${c}u, R - 1u) * K;`);
  for (const r of idx) for (const c of idx) L.push(`  var c${r}_${c} = 0.0;`);
  L.push(`  for (var k = 0u; k < K; k++) {`);
  for (const r of idx) L.push(`    let a${r} = A[pa${r} + k];`);
  for (const c of idx) L.push(`    let b${c} = A[pb${c} + k];`);
  for (const r of idx) {
    for (const c of idx) L.push(`    c${r}_${c} = fma(a${r}, b${c}, c${r}_${c});`);
  }
  L.push("  }");
  for (const r of idx) {
    for (const c of idx) {
      L.push(`  { let i = i0 + ${r}u; let j = j0 + ${c}u;
    if (i < R && j < R && (ti != tj || i <= j)) ${
        gramStore(hasD, `c${r}_${c}`, dIsA ? (idx) => `A[${idx}]` : undefined)
      } }`);
    }
  }
  return kernel({
    name: "gram",
    bindings: [
      { name: "A", type: "f32", access: "read" },
      ...(hasD && !dIsA ? [{ name: "D", type: "f32", access: "read" as const }] : []),
      { name: "C", type: "f32", access: "read_write" },
    ],
    workgroupSize: [16],
    body: L.join("\n"),
  });
}

/**
 * Writes 1 into `flags[slot]` when any element of the f32 tensor `t` is NaN or ±Inf (tested
 * on the bit pattern, which the compiler cannot fold away). `flags` is a u32 tensor the
 * caller zeroed; reading it back is the caller's (awaited) business.
 */
export function flagNonFinite(t: Tensor, flags: Tensor, slot: number): void {
  const n = t.size;
  needContiguousF32("checkFinite", "gradient", t, n);
  if (n === 0) return;
  const k = kernel({
    name: "flag_non_finite",
    bindings: [
      { name: "T", type: "u32", access: "read" },
      { name: "F", type: "u32", access: "read_write" },
    ],
    workgroupSize: [WG],
    body: `
  let i = ${linearId(WG)};
  if (i >= prm(0u)) { return; }
  if ((T[prm(1u) + i] & 0x7f800000u) == 0x7f800000u) { F[prm(2u)] = 1u; }`,
  });
  const prm = new Params().u(n, t.offset, flags.offset + slot);
  dispatch(k, [t.storage("checkFinite").buf, flags.storage("checkFinite").buf], prm.words, [
    ...grid1d(n, WG),
  ]);
}
