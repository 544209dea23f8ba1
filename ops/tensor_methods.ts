/**
 * Installs the ops layer's implementations of the Tensor methods that run kernels (x.add,
 * x.matmul, x.sum, ..., and what data(), backward(), detach() and assign() need) into
 * core/tensor.ts, which declares and documents them but imports nothing from ops. Importing
 * this module for its effect is enough; mod.ts and the nn/optim/io entry modules do.
 * Cost: one object with a function per method, built once at load.
 */
import { installTensorOps } from "../core/tensor.ts";
import * as ew from "./elementwise.ts";
import { clamp } from "./clamp.ts";
import { onesLike } from "./creation.ts";
import * as red from "./reduce.ts";
import * as lay from "./layout.ts";
import * as sm from "./softmax.ts";
import { matmul } from "./matmul.ts";
import { split } from "./concat.ts";
import * as idx from "./indexing.ts";
import { copyInto } from "./copy.ts";

installTensorOps({
  add: (x, other) => ew.add(x, other),
  sub: (x, other) => ew.sub(x, other),
  mul: (x, other) => ew.mul(x, other),
  div: (x, other) => ew.div(x, other),
  pow: (x, other) => ew.pow(x, other),
  maximum: (x, other) => ew.maximum(x, other),
  minimum: (x, other) => ew.minimum(x, other),
  eq: (x, other) => ew.eq(x, other),
  ne: (x, other) => ew.ne(x, other),
  lt: (x, other) => ew.lt(x, other),
  le: (x, other) => ew.le(x, other),
  gt: (x, other) => ew.gt(x, other),
  ge: (x, other) => ew.ge(x, other),
  neg: (x) => ew.neg(x),
  abs: (x) => ew.abs(x),
  exp: (x) => ew.exp(x),
  log: (x) => ew.log(x),
  sqrt: (x) => ew.sqrt(x),
  rsqrt: (x) => ew.rsqrt(x),
  sin: (x) => ew.sin(x),
  cos: (x) => ew.cos(x),
  tanh: (x) => ew.tanh(x),
  sigmoid: (x) => ew.sigmoid(x),
  silu: (x) => ew.silu(x),
  gelu: (x, approximate) => ew.gelu(x, approximate),
  relu: (x) => ew.relu(x),
  clamp: (x, min, max) => clamp(x, min, max),
  square: (x) => ew.square(x),
  cast: (x, dtype) => ew.cast(x, dtype),
  contiguous: (x) => ew.contiguous(x),
  sum: (x, axes, keepDims) => red.sum(x, axes, keepDims),
  mean: (x, axes, keepDims) => red.mean(x, axes, keepDims),
  max: (x, axes, keepDims) => red.max(x, axes, keepDims),
  min: (x, axes, keepDims) => red.min(x, axes, keepDims),
  argmax: (x, axis, keepDims) => red.argmax(x, axis, keepDims),
  var: (x, axes, options) => red.variance(x, axes, options),
  softmax: (x, axis) => sm.softmax(x, axis),
  logSoftmax: (x, axis) => sm.logSoftmax(x, axis),
  matmul: (x, other) => matmul(x, other),
  reshape: (x, shape) => lay.reshape(x, shape),
  permute: (x, axes) => lay.permute(x, axes),
  transpose: (x, a, b) => lay.transpose(x, a, b),
  slice: (x, axis, start, end, step) => lay.slice(x, axis, start, end, step),
  expand: (x, shape) => lay.expand(x, shape),
  unsqueeze: (x, axis) => lay.unsqueeze(x, axis),
  squeeze: (x, axis) => lay.squeeze(x, axis),
  flatten: (x) => lay.reshape(x, [x.size]),
  split: (x, sizesOrSections, axis) => split(x, sizesOrSections, axis),
  indexSelect: (x, axis, index) => idx.indexSelect(x, axis, index),
  gather: (x, axis, index) => idx.gather(x, axis, index),
  topk: (x, k) => idx.topk(x, k),
  onesLike: (x) => onesLike(x),
  alias: (x) => lay.alias(x),
  copyInto: (src, dst) => copyInto(src, dst),
});
