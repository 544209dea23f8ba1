/**
 * Polar Express coefficients (Amsel, Persson, Musco, Gower, arXiv 2505.16932): a per-step
 * schedule of odd quintics p_t(σ) = a·σ + b·σ³ + c·σ⁵ for Newton–Schulz, each the minimax
 * approximation of 1 on the interval the singular values occupy at step t, so that the
 * composition approaches the sign function as fast as a quintic can.
 *
 * Algorithm (computed here in float64, once per schedule; microseconds):
 *
 * ```
 * ℓ = ℓ₀ (smallest singular value assumed after normalisation), u = 1
 * for each step:
 *   (a, b, c) = argmin max_{σ∈[max(ℓ, κ·u), u]} |1 − p(σ)|      (Remez exchange, 4 points)
 *   rescale (a, b, c) so p(ℓ) + p(u) = 2                         (centre the image on 1)
 *   divide (a, b, c) by (s, s³, s⁵) with s = 1 + safety            (p(σ/s): room for rounding)
 *   ℓ = p(ℓ), u = 2 − ℓ
 * ```
 *
 * κ (the "cushion", 0.024) keeps the first polynomials from being tuned to an interval so wide
 * that their slope at the bottom becomes huge; the safety factor keeps singular values pushed
 * slightly above u by rounding from being mapped down. The last step is left without the
 * safety division. Greedy step-by-step minimax is optimal for the composition (the paper's
 * Theorem 3.1), so no global optimisation is needed.
 *
 * The equioscillation of an odd quintic on [l, u]: 1 − p alternates ±E at l < x₁ < x₂ < u,
 * where x₁, x₂ are the roots of p′(σ) = a + 3bσ² + 5cσ⁴ (a quadratic in σ²). Each Remez round
 * solves the 4×4 linear system for (a, b, c, E) at the current points and moves x₁, x₂ to the
 * new extrema; it converges in a handful of rounds.
 */
import { MoongradError } from "../core/errors.ts";
import type { NsCoefficients } from "./newton_schulz.ts";

/**
 * Options of `polarExpressCoefficients`.
 *
 * @example The paper's settings, spelled out
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const o: mg.optim.PolarExpressOptions = { steps: 5, lower: 1e-3, cushion: 0.024, safety: 0.01 };
 * ```
 */
export interface PolarExpressOptions {
  /** Number of steps (default 5). */
  steps?: number;
  /** Smallest singular value assumed after Frobenius normalisation, ℓ₀ (default 1e-3). */
  lower?: number;
  /** κ: each step's fit interval starts no lower than κ·u (default 0.02407327424182761). */
  cushion?: number;
  /** Every step but the last evaluates p(σ / (1 + safety)) (default 0.01). */
  safety?: number;
}

/** Solves the 4×4 system by Gaussian elimination with partial pivoting (float64). */
function solve4(m: number[][], rhs: number[]): number[] {
  const a = m.map((row, i) => [...row, rhs[i]]);
  for (let c = 0; c < 4; c++) {
    let p = c;
    for (let r = c + 1; r < 4; r++) if (Math.abs(a[r][c]) > Math.abs(a[p][c])) p = r;
    [a[c], a[p]] = [a[p], a[c]];
    for (let r = c + 1; r < 4; r++) {
      const f = a[r][c] / a[c][c];
      for (let k = c; k < 5; k++) a[r][k] -= f * a[c][k];
    }
  }
  const x = [0, 0, 0, 0];
  for (let r = 3; r >= 0; r--) {
    let s = a[r][4];
    for (let k = r + 1; k < 4; k++) s -= a[r][k] * x[k];
    x[r] = s / a[r][r];
  }
  return x;
}

const quintic = ([a, b, c]: readonly number[], x: number) => a * x + b * x ** 3 + c * x ** 5;

/**
 * The odd quintic minimising max |1 − p(σ)| over σ ∈ [l, u] (0 < l ≤ u), by Remez exchange.
 *
 * @example Minimax quintic on [0.1, 1]
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const [a, b, c] = mg.optim.minimaxQuintic(0.1, 1);
 * const p = (s: number) => a * s + b * s ** 3 + c * s ** 5;
 * console.log(p(0.1), p(1)); // both ≈ 1 − E and 1 + E around 1
 * ```
 */
export function minimaxQuintic(l: number, u: number): NsCoefficients {
  if (!(l > 0 && u >= l && Number.isFinite(u))) {
    throw new MoongradError("polarExpress", `needs 0 < l <= u finite, got l = ${l}, u = ${u}`);
  }
  // A narrow interval: the limit of the minimax fit is the quintic osculating 1 to third order
  // at its centre (p = 1, p′ = p″ = 0 there); the 4×4 system is singular long before.
  const m = (l + u) / 2;
  if ((u - l) / m < 1e-4) return [1.875 / m, -1.25 / m ** 3, 0.375 / m ** 5];
  // Start from the Chebyshev-like spread of the two interior points.
  let x1 = l + (u - l) / 4;
  let x2 = l + (3 * (u - l)) / 4;
  let coef = [0, 0, 0];
  for (let round = 0; round < 100; round++) {
    const pts = [l, x1, x2, u];
    const sol = solve4(
      pts.map((x, i) => [x, x ** 3, x ** 5, i % 2 === 0 ? 1 : -1]),
      [1, 1, 1, 1],
    );
    coef = sol.slice(0, 3);
    // New interior extrema: p′(σ) = a + 3b·σ² + 5c·σ⁴ = 0, a quadratic in s = σ².
    const [a, b, c] = coef;
    const disc = 9 * b * b - 20 * a * c;
    if (!(disc > 0) || c === 0) break;
    const r = [(-3 * b - Math.sqrt(disc)) / (10 * c), (-3 * b + Math.sqrt(disc)) / (10 * c)]
      .filter((s) => s > 0).map(Math.sqrt).filter((x) => x > l && x < u).sort((p, q) => p - q);
    if (r.length !== 2) break;
    const moved = Math.abs(r[0] - x1) + Math.abs(r[1] - x2);
    [x1, x2] = r;
    if (moved < 1e-15 * u) break;
  }
  return [coef[0], coef[1], coef[2]];
}

/**
 * The Polar Express schedule: one minimax-optimal quintic per Newton–Schulz step.
 *
 * @example Five Polar Express steps in Muon
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const schedule = mg.optim.polarExpressCoefficients({ steps: 5 });
 * console.log(schedule[0]); // ≈ [8.16, -22.48, 15.88] (p(σ/1.01) of the first minimax quintic)
 * const muonOptions = { lr: 0.02, nsCoefficients: schedule };
 * ```
 */
export function polarExpressCoefficients(options: PolarExpressOptions = {}): NsCoefficients[] {
  const steps = options.steps ?? 5;
  const lower = options.lower ?? 1e-3;
  const cushion = options.cushion ?? 0.02407327424182761;
  const safety = options.safety ?? 0.01;
  const op = "polarExpress";
  if (!Number.isInteger(steps) || steps < 1 || steps > 100) {
    throw new MoongradError(op, `steps must be an integer in [1, 100], got ${steps}`);
  }
  if (!(lower > 0 && lower < 1)) {
    throw new MoongradError(op, `lower must be in (0, 1), got ${lower}`);
  }
  if (!(cushion >= 0 && cushion < 1)) {
    throw new MoongradError(op, `cushion must be in [0, 1), got ${cushion}`);
  }
  if (!(safety >= 0 && safety < 1)) {
    throw new MoongradError(op, `safety must be in [0, 1), got ${safety}`);
  }
  const out: NsCoefficients[] = [];
  let l = lower;
  let u = 1;
  for (let t = 0; t < steps; t++) {
    let c = [...minimaxQuintic(Math.max(l, cushion * u), u)];
    const centre = 2 / (quintic(c, l) + quintic(c, u));
    c = c.map((v) => v * centre);
    l = quintic(c, l);
    u = 2 - l;
    if (t < steps - 1) {
      const s = 1 + safety;
      c = [c[0] / s, c[1] / s ** 3, c[2] / s ** 5];
    }
    out.push([c[0], c[1], c[2]]);
  }
  return out;
}
