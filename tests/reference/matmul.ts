/**
 * Float64 reference of matmul with NumPy semantics and its vjp. Both are written as one loop
 * over every (batch, m, n, k) term of the product, reading and scattering through the
 * broadcast source index of each operand, so they share no structure with the GPU code
 * (which uses transposed products and sumTo).
 */
import { broadcastShape, NDArray, ravel, size, unravel } from "./ndarray.ts";

interface Terms {
  outShape: number[];
  M: number;
  N: number;
  K: number;
  /** Calls f(outIndex, aIndex, bIndex) for every term a·b of the product. */
  each(f: (o: number, ia: number, ib: number) => void): void;
}

function terms(aShape: readonly number[], bShape: readonly number[]): Terms {
  if (aShape.length === 0 || bShape.length === 0) throw new Error("matmulRef: rank 0 operand");
  const a2 = aShape.length === 1 ? [1, aShape[0]] : [...aShape];
  const b2 = bShape.length === 1 ? [bShape[0], 1] : [...bShape];
  const [M, K] = a2.slice(-2);
  const [Kb, N] = b2.slice(-2);
  if (K !== Kb) throw new Error(`matmulRef: inner dimensions ${K} and ${Kb} differ`);
  const batch = broadcastShape(a2.slice(0, -2), b2.slice(0, -2));
  const outShape = [...batch];
  if (aShape.length > 1) outShape.push(M);
  if (bShape.length > 1) outShape.push(N);
  const source = (shape: number[], c: number[]) => {
    const lead = batch.length - (shape.length - 2);
    return c.slice(lead).map((v, d) => (shape[d] === 1 ? 0 : v));
  };
  return {
    outShape,
    M,
    N,
    K,
    each(f) {
      for (let bi = 0; bi < size(batch); bi++) {
        const c = unravel(bi, batch);
        const baseA = ravel([...source(a2, c), 0, 0], a2);
        const baseB = ravel([...source(b2, c), 0, 0], b2);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            const o = (bi * M + m) * N + n;
            for (let k = 0; k < K; k++) f(o, baseA + m * K + k, baseB + k * N + n);
          }
        }
      }
    },
  };
}

/** C = a @ b in float64 (1-D operands and batch broadcasting as in NumPy). */
export function matmulRef(a: NDArray, b: NDArray): NDArray {
  const t = terms(a.shape, b.shape);
  const out = new Float64Array(size(t.outShape));
  t.each((o, ia, ib) => (out[o] += a.data[ia] * b.data[ib]));
  return new NDArray(out, t.outShape);
}

/** Σ_k |a||b| for each output element: the scale of f32 rounding error in that element. */
export function matmulAbsRef(a: NDArray, b: NDArray): NDArray {
  const t = terms(a.shape, b.shape);
  const out = new Float64Array(size(t.outShape));
  t.each((o, ia, ib) => (out[o] += Math.abs(a.data[ia] * b.data[ib])));
  return new NDArray(out, t.outShape);
}

/** Gradients of Σ g·(a @ b) with respect to a and b, in float64. */
export function matmulVjpRef(a: NDArray, b: NDArray, g: NDArray): [NDArray, NDArray] {
  const t = terms(a.shape, b.shape);
  const ga = new Float64Array(a.size);
  const gb = new Float64Array(b.size);
  t.each((o, ia, ib) => {
    ga[ia] += g.data[o] * b.data[ib];
    gb[ib] += g.data[o] * a.data[ia];
  });
  return [new NDArray(ga, a.shape), new NDArray(gb, b.shape)];
}
