/**
 * A tiny float64 reverse-mode autodiff over the reference ops: values are numbered in creation
 * order, each computed value keeps its operands' numbers and its vjp (from the other reference
 * files), and `reverse` walks the numbers downwards (a valid reverse topological order, since
 * an op's operands always have smaller numbers) accumulating adjoints. No code is shared with
 * the library's autograd.
 */
import { type NDArray, zip } from "./ndarray.ts";

/** A computed value on the tape: its operands (value numbers; null for a constant) and vjp. */
export interface TapeNode {
  /** Operand value numbers, in vjp order; null where the operand needs no gradient. */
  args: readonly (number | null)[];
  /** Gradients of the operands (same order) from the value's gradient. */
  vjp: (g: NDArray) => readonly (NDArray | null)[];
}

/**
 * Adjoints of every value from the gradient `g` of value `out`: entry i is d(Σ g·out)/d(value
 * i), or undefined where value i does not reach `out`. `nodes[i]` is undefined for leaves.
 */
export function reverse(
  nodes: readonly (TapeNode | undefined)[],
  out: number,
  g: NDArray,
): (NDArray | undefined)[] {
  const adj: (NDArray | undefined)[] = new Array(nodes.length);
  adj[out] = g;
  for (let i = out; i >= 0; i--) {
    const node = nodes[i];
    const gi = adj[i];
    if (!node || !gi) continue;
    const grads = node.vjp(gi);
    node.args.forEach((a, j) => {
      const ga = grads[j];
      if (a === null || !ga) return;
      if (a >= i) throw new Error(`tape: value ${i} uses the later value ${a}`);
      const prev = adj[a];
      adj[a] = prev ? zip([prev, ga], (x, y) => x + y) : ga;
    });
  }
  return adj;
}
