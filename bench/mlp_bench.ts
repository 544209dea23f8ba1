/**
 * One training step of a 2-layer MLP (x @ W1 → relu → @ W2, mean squared error against a
 * fixed target, backward, plain SGD update W -= lr·∇W), moongrad beside TensorFlow.js
 * (`tf.train.sgd(lr).minimize`) and jax-js (`jit` of `valueAndGrad` + the update: its
 * idiomatic fast path). Same initial weights, data and learning rate everywhere; the check
 * compares the loss after one step. Every timed iteration waits for the GPU.
 *
 * GFLOP/s count the three products of the forward and backward passes that any
 * implementation must do: 2·B·(2·D·H + 3·H·O) (no gradient for x).
 *
 *   deno task bench bench/mlp_bench.ts
 */
import * as mg from "../mod.ts";
import { benchCase } from "./harness.ts";
import { loadJax, loadTfjs, tfSync, values } from "./peers.ts";

const info = await mg.init();
const tfl = await loadTfjs();
const jxl = await loadJax();

const [B, D, H, O] = [128, 256, 512, 256];
const LR = 0.05;
const xv = values(B * D, 1);
const yv = values(B * O, 2);
// Weights scaled by 1/sqrt(fan-in) so the loss is O(1).
const w1v = values(D * H, 3).map((v) => v * Math.sqrt(3 / D));
const w2v = values(H * O, 4).map((v) => v * Math.sqrt(3 / H));

console.log(`MLP training step on ${info.description}`);
if (!tfl.ok) console.log(`  tfjs-webgpu unavailable: ${tfl.why}`);
if (!jxl.ok) console.log(`  jax-js unavailable: ${jxl.why}`);

await benchCase({
  group: `MLP step f32 B${B} ${D}-${H}-${O}`,
  work: { flops: 2 * B * (2 * D * H + 3 * H * O) },
  n: 5,
  // The loss after one step; the three libraries sum in different orders.
  tol: 1e-4,
  impls: [
    {
      lib: "moongrad",
      prepare: () => {
        const x = mg.tensor(xv, { shape: [B, D] });
        const y = mg.tensor(yv, { shape: [B, O] });
        const w1 = mg.tensor(w1v, { shape: [D, H], requiresGrad: true });
        const w2 = mg.tensor(w2v, { shape: [H, O], requiresGrad: true });
        const loss = () => mg.mseLoss(mg.relu(x.matmul(w1)).matmul(w2), y);
        return Promise.resolve({
          async run() {
            mg.scope(() => {
              loss().backward();
              mg.noGrad(() => {
                for (const w of [w1, w2]) w.assign(w.sub(w.grad!.mul(LR)));
              });
            });
            w1.zeroGrad();
            w2.zeroGrad();
            await mg.sync();
          },
          async result() {
            const l = mg.noGrad(() => mg.scope(() => loss()));
            const d = await l.data();
            l.dispose();
            return d;
          },
        });
      },
    },
    {
      lib: "tfjs-webgpu",
      prepare: () => {
        if (!tfl.ok) return Promise.resolve(tfl.why);
        const tf = tfl.lib;
        const x = tf.tensor(xv, [B, D]);
        const y = tf.tensor(yv, [B, O]);
        const w1 = tf.variable(tf.tensor(w1v, [D, H]));
        const w2 = tf.variable(tf.tensor(w2v, [H, O]));
        const opt = tf.train.sgd(LR);
        const loss = () =>
          tf.mean(tf.square(tf.sub(tf.matMul(tf.relu(tf.matMul(x, w1)), w2), y))) as typeof x;
        return Promise.resolve({
          async run() {
            opt.minimize(loss as () => ReturnType<typeof tf.scalar>, false, [w1, w2]);
            await tfSync(tf);
          },
          async result() {
            const l = tf.tidy(loss);
            const d = await l.data();
            l.dispose();
            return d;
          },
        });
      },
    },
    {
      lib: "jax-js",
      prepare: () => {
        if (!jxl.ok) return Promise.resolve(jxl.why);
        const jax = jxl.lib;
        const np = jax.numpy;
        type P = { w1: InstanceType<typeof jax.Array>; w2: InstanceType<typeof jax.Array> };
        const x = np.array(xv).reshape([B, D]);
        const y = np.array(yv).reshape([B, O]);
        let p: P = { w1: np.array(w1v).reshape([D, H]), w2: np.array(w2v).reshape([H, O]) };
        // jax-js functions (and jit functions) take ownership of their arguments.
        const loss = (p: P, x: P["w1"], y: P["w1"]) => {
          const d = np.matmul(jax.nn.relu(np.matmul(x, p.w1)), p.w2).sub(y);
          return d.ref.mul(d).mean();
        };
        const step = jax.jit((p: P, x: P["w1"], y: P["w1"]): P => {
          const g = jax.grad(loss)(jax.tree.ref(p), x, y);
          return { w1: p.w1.sub(g.w1.mul(LR)), w2: p.w2.sub(g.w2.mul(LR)) };
        });
        const evalLoss = jax.jit(loss);
        return Promise.resolve({
          async run() {
            p = step(p, x.ref, y.ref);
            await jax.blockUntilReady(p);
          },
          async result() {
            return await evalLoss(jax.tree.ref(p), x.ref, y.ref).data();
          },
        });
      },
    },
  ],
});
