/**
 * Node test of the bundle: `dist/moongrad.js` under Node on Dawn (npm `webgpu`), a matmul and
 * its gradient checked against a float64 CPU computation. Run by `deno task test:web` with
 * VK_ICD_FILENAMES pointing at SwiftShader (Dawn refuses Debian's lavapipe); exits non-zero on
 * failure.
 */
// Dynamic imports: `deno check tests/` must not need tests/web/node_modules or dist/.
const { create } = await import("webgpu");
const mg = await import("../../dist/moongrad.js");

/** Deterministic values in [-1, 1). */
function values(n, seed) {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

// No WebGPU globals are installed and no reference to the GPU object is kept here: moongrad
// needs neither (Node has no GPUBufferUsage & co.; init keeps Dawn's GPU object alive).
const info = await mg.init({ gpu: create(["backend=vulkan"]) });
console.log(`adapter: ${info.description} (${info.vendor})`);

// Odd sizes that do not divide the matmul tiles.
const [M, K, N] = [37, 29, 43];
const a = values(M * K, 1), b = values(K * N, 2);
const ta = mg.tensor(a, { shape: [M, K], requiresGrad: true });
const tb = mg.tensor(b, { shape: [K, N] });
const c = ta.matmul(tb);
c.sum().backward();
const [got, grad] = await Promise.all([c.data(), ta.grad.data()]);

let worst = 0;
for (let i = 0; i < M; i++) {
  for (let j = 0; j < N; j++) {
    let want = 0;
    for (let k = 0; k < K; k++) want += a[i * K + k] * b[k * N + j];
    // f32 accumulation over K = 29 products of magnitude < 1: 1e-4 absolute is ample.
    worst = Math.max(worst, Math.abs(got[i * N + j] - want) / (1 + Math.abs(want)));
  }
}
// d sum(A·B) / dA[i, k] = sum_j B[k, j], the same for every row i.
let worstGrad = 0;
for (let k = 0; k < K; k++) {
  let want = 0;
  for (let j = 0; j < N; j++) want += b[k * N + j];
  for (let i = 0; i < M; i++) {
    worstGrad = Math.max(worstGrad, Math.abs(grad[i * K + k] - want) / (1 + Math.abs(want)));
  }
}
console.log(
  `matmul ${M}x${K}x${N}: max error ${worst.toExponential(2)}, grad ${worstGrad.toExponential(2)}`,
);
if (!(worst < 1e-4 && worstGrad < 1e-4)) {
  console.error("FAIL: the bundle's matmul differs from the CPU result");
  process.exit(1);
}
process.exit(0);
