/**
 * Define-by-run reverse-mode autograd. An op whose inputs need gradients records a GradNode
 * on its output; `backward()` walks the nodes in reverse topological order once.
 */
import { MoongradError } from "./errors.ts";
import { isFloat } from "./dtype.ts";
import type { Tensor } from "./tensor.ts";

/**
 * Computes the gradients of a node's inputs from its output gradient. `needs[i]` says which
 * inputs need one; `saved` holds the retained handles of the tensors passed to `record` as
 * saved (same order): read those, not the caller's handles, which may be disposed by then.
 *
 * `priors` (absent when a vjp is called by hand) lets a vjp fold gradient accumulation into
 * its own kernel: when input j already received a gradient earlier in this backward pass
 * (the input feeds several ops), `priors.prior(j)` returns that accumulated gradient, shaped
 * and typed like input j. A vjp that writes prior + its own gradient in one kernel (an
 * epilogue reading the prior) returns that sum for input j and calls `priors.absorb(j)`;
 * backward then takes the returned tensor as the new accumulated gradient and disposes the
 * prior, instead of dispatching `add(prior, own)`. Contract:
 * - the prior is read-only: it may share storage with other live gradients (a pass-through
 *   vjp's gradient is aliased to several inputs), so write the sum into a new tensor;
 * - do not dispose the prior, and return a tensor distinct from `grad` for an absorbed input;
 * - fold only when exact: `prior + own` in f32 per element (rounded once to the dtype, as
 *   `add` does) gives results bit-identical to the unfused `add(prior, own)`;
 * - `prior(j)` is null when input j needs no gradient, has none yet, or is the same tensor as
 *   an earlier input of this node (`x.mul(x)`: only the first occurrence sees the prior).
 * Priors are this pass's intermediates only: never a leaf's `.grad` (accumulated after the
 * pass) nor a caller's tensor.
 *
 * @example Call a recorded node's vjp by hand
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([1, 2], { requiresGrad: true });
 * const y = x.mul(3);
 * const node = y.gradFn!;
 * const vjp: mg.Vjp = node.vjp!;
 * const [dx] = vjp(mg.ones([2]), [true], node.saved); // d(3x)/dx · 1
 * console.log(await dx!.toArray()); // [3, 3]
 * ```
 *
 * @example A vjp that absorbs the gradient accumulated so far (matmul's, called by hand)
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const a = mg.tensor([[1, 2]], { requiresGrad: true });
 * const node = a.matmul(mg.tensor([[1], [1]])).gradFn!;
 * const prior = mg.tensor([[10, 20]]); // what `a` received from its other uses
 * const priors: mg.GradPriors = { prior: (j) => (j === 0 ? prior : null), absorb: () => {} };
 * const [da] = node.vjp!(mg.ones([1, 1]), [true, false], node.saved, priors);
 * console.log(await da!.toArray()); // [[11, 21]]: prior + g·wᵀ in one matmul dispatch
 * ```
 */
export type Vjp = (
  grad: Tensor,
  needs: readonly boolean[],
  saved: readonly Tensor[],
  priors?: GradPriors,
) => readonly (Tensor | null)[];

/**
 * What backward offers a vjp about its inputs' accumulated gradients (see `Vjp`).
 *
 * @example A vjp of y = 2x that absorbs the prior when there is one
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * const double: mg.Vjp = (g, needs, _saved, priors?: mg.GradPriors) => {
 *   const prior = needs[0] ? priors?.prior(0) : null;
 *   if (!prior) return [g.mul(2)];
 *   priors!.absorb(0);
 *   return [prior.add(g.mul(2))]; // a real vjp does this in its own kernel's epilogue
 * };
 * console.log(typeof double); // function
 * ```
 */
export interface GradPriors {
  /**
   * The gradient input j has accumulated so far in this backward pass, or null (none yet, not
   * needed, or an input that repeats an earlier one). Read-only; owned by backward.
   */
  prior(j: number): Tensor | null;
  /** Declares that the gradient returned for input j already includes `prior(j)`. */
  absorb(j: number): void;
}

/**
 * One recorded op: its inputs, its vjp, and the tensors it saved for backward.
 *
 * @example Look at the op that produced a tensor
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([1, 2, 3], { requiresGrad: true });
 * const node: mg.GradNode | null = x.exp().sum().gradFn;
 * console.log(node?.op, node?.inputs[0].shape); // sum [3]
 * ```
 */
export interface GradNode {
  /** Op name, for error messages. */
  readonly op: string;
  /** The op's tensor inputs. */
  readonly inputs: readonly Tensor[];
  /** The vjp; null once backward has used it (the graph is freed). */
  vjp: Vjp | null;
  /** Tensors kept alive for the vjp, released right after it runs. */
  saved: Tensor[];
  /** Live references: the output handle plus every recorded node that uses the output. */
  refs: number;
  /** Recording order: every node's inputs were recorded before it (smaller `seq`). */
  readonly seq: number;
}

let nextSeq = 0;

let gradEnabled = true;

/**
 * True when ops record the graph (false inside `noGrad`).
 *
 * @example Inside and outside noGrad
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * console.log(mg.isGradEnabled()); // true
 * console.log(mg.noGrad(() => mg.isGradEnabled())); // false
 * ```
 */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Runs `fn` without recording any graph: nothing is saved for backward.
 *
 * @example Evaluate without building a graph
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const w = mg.randn([4, 4], { seed: 0, requiresGrad: true });
 * const y = mg.noGrad(() => w.matmul(w).relu());
 * console.log(y.requiresGrad, y.gradFn); // false null
 * ```
 */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** True when an op on these inputs must record a node. */
export function needsGrad(...inputs: readonly (Tensor | number | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) {
    if (t && typeof t === "object" && t.requiresGrad) return true;
  }
  return false;
}

/**
 * Records `vjp` as the node producing `out` when any input requires grad. `saved` tensors
 * are retained (new handles on the same storage) and released after the vjp has run.
 * Returns `out`.
 */
export function record(
  out: Tensor,
  op: string,
  inputs: readonly Tensor[],
  vjp: Vjp,
  saved: readonly Tensor[] = [],
): Tensor {
  if (!needsGrad(...inputs) || !isFloat(out.dtype)) {
    return out;
  }
  out.requiresGrad = true;
  for (const t of inputs) if (t.gradFn) t.gradFn.refs++;
  out.gradFn = {
    op,
    inputs,
    vjp,
    saved: saved.map((t) => t.retainForBackward()),
    refs: 1,
    seq: nextSeq++,
  };
  return out;
}

/**
 * Options of `backward`.
 *
 * @example Run backward twice through one graph
 * ```ts
 * import * as mg from "@moongrad/moongrad";
 * await mg.init();
 * const x = mg.tensor([1, 2], { requiresGrad: true });
 * const loss = x.square().sum();
 * loss.backward(undefined, { retainGraph: true });
 * loss.backward(); // gradients accumulate: 2 · 2x
 * console.log(await x.grad!.toArray()); // [4, 8]
 * ```
 */
export interface BackwardOptions {
  /** Keep the graph so backward can run through it again. */
  retainGraph?: boolean;
}

/** Reverse-mode pass from `root`, accumulating into `.grad` of the leaves that require grad. */
export function runBackward(
  root: Tensor,
  grad: Tensor | undefined,
  ones: (like: Tensor) => Tensor,
  add: (a: Tensor, b: Tensor) => Tensor,
  alias: (t: Tensor) => Tensor,
  options: BackwardOptions = {},
): void {
  if (!root.requiresGrad) {
    throw new MoongradError(
      "backward",
      "the tensor does not require grad: no input of its graph was created with requiresGrad",
    );
  }
  if (!grad && root.size !== 1) {
    throw new MoongradError(
      "backward",
      `backward() without a gradient needs a scalar (one element), got shape [${root.shape}]; ` +
        "pass the upstream gradient: t.backward(grad)",
    );
  }
  if (
    grad && (grad.shape.length !== root.shape.length ||
      grad.shape.some((d, i) => d !== root.shape[i]))
  ) {
    throw new MoongradError(
      "backward",
      `gradient shape [${grad.shape}] must equal the tensor's shape [${root.shape}]`,
    );
  }
  const order = topoOrder(root);
  for (const node of order) {
    if (!node.vjp) {
      throw new MoongradError(
        "backward",
        `the graph through ${node.op} was already freed by an earlier backward(); ` +
          "pass { retainGraph: true } to the first call to run backward twice",
      );
    }
  }
  noGrad(() => {
    const nodeGrads = new Map<GradNode, Tensor>();
    const leafGrads = new Map<Tensor, Tensor>();
    const accumulate = (t: Tensor, g: Tensor) => {
      if (t.gradFn) {
        const prev = nodeGrads.get(t.gradFn);
        nodeGrads.set(t.gradFn, prev ? sumAndDispose(prev, g, add) : g);
      } else if (t.requiresGrad) {
        const prev = leafGrads.get(t);
        leafGrads.set(t, prev ? sumAndDispose(prev, g, add) : g);
      } else {
        g.dispose();
      }
    };
    /** The gradient `t` has accumulated so far in this pass. */
    const pending = (t: Tensor): Tensor | undefined =>
      t.gradFn ? nodeGrads.get(t.gradFn) : t.requiresGrad ? leafGrads.get(t) : undefined;
    /** Sets `t`'s accumulated gradient to `g` (which already includes the previous one). */
    const replace = (t: Tensor, g: Tensor) => {
      if (t.gradFn) nodeGrads.set(t.gradFn, g);
      else leafGrads.set(t, g);
    };
    accumulate(root, grad ? alias(grad) : ones(root));
    for (let i = order.length - 1; i >= 0; i--) {
      const node = order[i];
      const g = nodeGrads.get(node);
      nodeGrads.delete(node);
      if (!g) continue;
      const needs = node.inputs.map((t) => t.requiresGrad && isFloat(t.dtype));
      const absorbed: (Tensor | undefined)[] = [];
      const priors: GradPriors = {
        prior: (j) => {
          const t = node.inputs[j];
          if (!t || !needs[j]) return null;
          for (let k = 0; k < j; k++) if (sameTarget(node.inputs[k], t)) return null;
          return pending(t) ?? null;
        },
        absorb: (j) => {
          const p = priors.prior(j);
          if (!p) {
            throw new MoongradError(
              node.op,
              `internal: the vjp absorbed input ${j}'s prior gradient, but it has none`,
            );
          }
          absorbed[j] = p;
        },
      };
      const grads = node.vjp!(g, needs, node.saved, priors);
      node.inputs.forEach((t, j) => {
        const gj = grads[j];
        const prior = absorbed[j];
        if (prior) {
          if (!gj || gj === g) {
            throw new MoongradError(
              node.op,
              `internal: the vjp absorbed input ${j}'s prior gradient but returned ` +
                (gj ? "its output gradient" : "no gradient"),
            );
          }
          replace(t, gj);
          if (gj !== prior) prior.dispose();
          return;
        }
        if (!gj || !needs[j]) {
          if (gj && gj !== g) gj.dispose();
          return;
        }
        accumulate(t, gj === g ? alias(g) : gj);
      });
      g.dispose();
      if (!options.retainGraph) freeNode(node);
    }
    for (const [leaf, g] of leafGrads) {
      if (leaf.isDisposed) {
        g.dispose();
        continue;
      }
      const prev = leaf.grad;
      leaf.grad = prev ? sumAndDispose(prev, g, add) : g;
      leaf.grad.untrack();
    }
  });
}

/** True when two inputs accumulate into the same gradient (one tensor, or one node's output). */
function sameTarget(a: Tensor, b: Tensor): boolean {
  return a === b || (a.gradFn !== null && a.gradFn === b.gradFn);
}

function sumAndDispose(a: Tensor, b: Tensor, add: (a: Tensor, b: Tensor) => Tensor): Tensor {
  const s = add(a, b);
  a.dispose();
  b.dispose();
  return s;
}

/**
 * Drops one reference to a node (its output handle was disposed, or a node using it was
 * released). The last reference frees what it saved and releases the nodes it points to,
 * so a graph nobody can run backward through any more holds no GPU memory.
 */
export function releaseNode(node: GradNode): void {
  const stack = [node];
  while (stack.length) {
    const n = stack.pop()!;
    if (--n.refs > 0) continue;
    freeNode(n);
    for (const t of n.inputs) if (t.gradFn) stack.push(t.gradFn);
  }
}

/** Releases what a node saved and drops its vjp. */
export function freeNode(node: GradNode): void {
  for (const t of node.saved) t.dispose();
  node.saved = [];
  node.vjp = null;
}

/**
 * Nodes reachable from `root` in recording order (inputs before the nodes that use them), so
 * backward runs the vjps in reverse recording order, like PyTorch's sequence numbers: work the
 * forward recorded side by side (MLA's query and key/value paths) is differentiated side by
 * side, and the runtime can co-launch the two halves (core/colaunch.ts).
 */
function topoOrder(root: Tensor): GradNode[] {
  return reachable(root).sort((a, b) => a.seq - b.seq);
}

/** Nodes reachable from `root`, inputs before the nodes that use them (depth first). */
function reachable(root: Tensor): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>();
  if (!root.gradFn) return order;
  const stack: [GradNode, number][] = [[root.gradFn, 0]];
  seen.add(root.gradFn);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const child = node.inputs[i].gradFn;
      if (child && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order;
}
