/**
 * Sparse routing vs evaluating every expert, on one Mixtral-shaped MoE layer.
 *
 *   node --import tsx bench/moe.ts [--backend wasm|cpu] [--hidden 1024] [--inter 3584] [--experts 8]
 *
 * Default shape: Mixtral 8x7B scaled down 4× in width (hidden 4096 → 1024, inter 14336 → 3584),
 * 8 experts, top-2. "all experts" runs every expert on every token and mixes with the same
 * routing weights (zero for unchosen experts): the same output, 4× the expert FLOPs. Both are
 * checked to agree, then timed in the same process, interleaved.
 */
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { useBackend, type BackendName } from '../src/kernels/backend.js';
import { linear, makeLinear } from '../src/kernels/linear.js';
import { feedForward, type FeedForwardWeights } from '../src/model/feedforward.js';
import { mixtureOfExperts, type MoeWeights } from '../src/model/moe.js';
import { NO_HOOKS } from '../src/model/hooks.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    hidden: { type: 'string', default: '1024' },
    inter: { type: 'string', default: '3584' },
    experts: { type: 'string', default: '8' },
    reps: { type: 'string', default: '5' },
  },
});
const H = Number(values.hidden);
const I = Number(values.inter);
const E = Number(values.experts);
const K = 2;
const reps = Number(values.reps);
await useBackend(values.backend as BackendName);

let seed = 1;
const randn = (n: number, scale: number) => Float32Array.from({ length: n }, () => {
  seed = (seed * 16807) % 2147483647;
  const u = seed / 2147483647;
  seed = (seed * 16807) % 2147483647;
  const v = seed / 2147483647;
  return scale * Math.sqrt(-2 * Math.log(u + 1e-12)) * Math.cos(2 * Math.PI * v);
});
const experts: FeedForwardWeights[] = Array.from({ length: E }, () => ({
  gate: makeLinear(randn(I * H, 1 / Math.sqrt(H)), I, H),
  up: makeLinear(randn(I * H, 1 / Math.sqrt(H)), I, H),
  down: makeLinear(randn(H * I, 1 / Math.sqrt(I)), H, I),
}));
const w: MoeWeights = { router: makeLinear(randn(E * H, 2 / Math.sqrt(H)), E, H), numExperts: E, expert: (e) => experts[e]! };

const sparse = (x: tf.Tensor2D) => tf.tidy(() => mixtureOfExperts(x, w, K, NO_HOOKS));

/** Every expert on every token; unchosen experts get weight 0. */
const dense = (x: tf.Tensor2D) => tf.tidy(() => {
  const T = x.shape[0];
  const logits = linear(x, w.router).dataSync();
  const mix = new Float32Array(T * E);
  for (let t = 0; t < T; t++) {
    const row = Array.from(logits.subarray(t * E, (t + 1) * E));
    const order = row.map((_, e) => e).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, K);
    const ex = order.map((e) => Math.exp(row[e]! - row[order[0]!]!));
    const s = ex.reduce((a, b) => a + b, 0);
    order.forEach((e, j) => { mix[t * E + e] = ex[j]! / s; });
  }
  const m = tf.tensor2d(mix, [T, E]);
  let out = tf.zerosLike(x) as tf.Tensor2D;
  for (let e = 0; e < E; e++) out = tf.add(out, tf.mul(feedForward(x, experts[e]!), tf.slice(m, [0, e], [T, 1])));
  return out;
});

function time(fn: (x: tf.Tensor2D) => tf.Tensor2D, x: tf.Tensor2D): number {
  const t0 = performance.now();
  const y = fn(x);
  y.dataSync();
  y.dispose();
  return performance.now() - t0;
}

const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)]!;
console.log(`MoE layer: hidden ${H}, inter ${I}, ${E} experts, top-${K}, backend ${values.backend}, median of ${reps}`);
console.log('tokens  sparse ms  all-experts ms  sparse / all');
for (const T of [1, 16, 128]) {
  const x = tf.tensor2d(randn(T * H, 1), [T, H]);
  const a = sparse(x);
  const b = dense(x);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
  if (diff > 1e-4) throw new Error(`sparse and all-experts outputs differ by ${diff}`);
  tf.dispose([a, b]);
  const s: number[] = [];
  const d: number[] = [];
  for (let r = 0; r < reps; r++) { s.push(time(sparse, x)); d.push(time(dense, x)); }
  console.log(`${String(T).padStart(6)}  ${median(s).toFixed(1).padStart(9)}  ${median(d).toFixed(1).padStart(14)}  ${(median(s) / median(d)).toFixed(2).padStart(12)}`);
  x.dispose();
}
