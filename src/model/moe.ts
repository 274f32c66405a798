import * as tf from '@tensorflow/tfjs-core';
import { linear, type Linear } from '../kernels/linear.js';
import { feedForward, type FeedForwardWeights } from './feedforward.js';
import type { HookScope } from './hooks.js';

export interface MoeWeights {
  readonly router: Linear; // [experts, hidden]
  readonly numExperts: number;
  /**
   * Loads (stream mode) or returns expert e's SwiGLU weights; called only for chosen
   * experts, and each expert's work finishes before the next is asked for, so stream mode
   * may free expert e when expert e′ is requested (one expert resident per layer).
   */
  expert(e: number): FeedForwardWeights;
}

/** What the router decided for each token of one layer. */
export interface Routing {
  /** [tokens, experts] raw router logits, row-major. */
  readonly logits: Float32Array;
  /** [tokens, k] chosen experts, best first. */
  readonly experts: Int32Array;
  /** [tokens, k] mixing weights, summing to 1 per token. */
  readonly weights: Float32Array;
  readonly numExperts: number;
  readonly k: number;
}

/**
 * Top-k routing for one token.
 *
 * Mistral's code takes the top k router logits and softmaxes over those k. transformers
 * softmaxes over all E experts, takes the top k probabilities and renormalises them to
 * sum to 1. They are the same numbers: softmax is monotonic, so both pick the same experts,
 * and for the chosen set C
 *
 *   (e^{l_i} / Σ_E e^{l_j}) / Σ_{c∈C} (e^{l_c} / Σ_E e^{l_j})  =  e^{l_i} / Σ_{c∈C} e^{l_c}
 *
 * because the full normaliser cancels. Ties go to the lowest expert index.
 *
 * @param logits the E router logits of one token
 */
export function routeToken(logits: ArrayLike<number>, k: number): { experts: number[]; weights: number[] } {
  const order = Array.from({ length: logits.length }, (_, e) => e);
  order.sort((a, b) => logits[b]! - logits[a]! || a - b); // stable: lowest index first on ties
  const experts = order.slice(0, k);
  const top = logits[experts[0]!]!;
  const exps = experts.map((e) => Math.exp(logits[e]! - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return { experts, weights: exps.map((x) => Math.fround(x / sum)) };
}

/**
 * Sparse mixture of SwiGLU experts (Mixtral, Jiang et al. 2024). Each token goes through
 * its k chosen experts only: tokens are gathered per expert, run, weighted, and summed
 * back into place. Experts no token chose are never touched (nor loaded, in stream mode).
 *
 * @param x [tokens, hidden], normalised
 * @returns [tokens, hidden] and the routing decisions
 */
export function mixtureOfExperts(x: tf.Tensor2D, w: MoeWeights, k: number, hook: HookScope):
  { out: tf.Tensor2D; routing: Routing } {
  const T = x.shape[0];
  const E = w.numExperts;
  const routerLogits = hook('moe.hook_router_logits', linear(x, w.router)); // [tokens, experts]
  const logits = routerLogits.dataSync() as Float32Array;

  const chosen = new Int32Array(T * k);
  const mix = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const r = routeToken(logits.subarray(t * E, (t + 1) * E), k);
    chosen.set(r.experts, t * k);
    mix.set(r.weights, t * k);
  }
  // Hooks may overrule the router (force an expert, ablate one): read back what they return.
  const experts = hook('moe.hook_expert_indices', tf.tensor2d(chosen, [T, k], 'int32')).dataSync() as Int32Array;
  const weights = hook('moe.hook_expert_weights', tf.tensor2d(mix, [T, k])).dataSync() as Float32Array;

  // rowOf[t·k + j]: the row of the stacked expert outputs that holds token t's j-th expert.
  const outputs: tf.Tensor2D[] = [];
  const rowOf = new Int32Array(T * k);
  let rows = 0;
  for (let e = 0; e < E; e++) {
    const slots: number[] = [];
    for (let i = 0; i < T * k; i++) if (experts[i] === e) slots.push(i);
    if (slots.length === 0) continue;
    const tokens = slots.map((i) => Math.floor(i / k));
    const xe = tf.gather(x, tf.tensor1d(tokens, 'int32')); // [routed, hidden]
    const ye = feedForward(xe, w.expert(e)); // [routed, hidden]
    outputs.push(tf.mul(ye, tf.tensor2d(slots.map((i) => weights[i]!), [slots.length, 1])));
    for (const i of slots) rowOf[i] = rows++;
  }
  // Scatter-add back to the tokens: token t sums its k rows, in expert-index order (as
  // transformers' index_add_ over experts does), so the float32 sum matches for any k.
  const stacked = tf.concat(outputs, 0); // [tokens·k, hidden]
  let out: tf.Tensor2D | null = null;
  for (let j = 0; j < k; j++) {
    const rowsJ = Array.from({ length: T }, (_, t) => {
      const mine = Array.from({ length: k }, (_, m) => t * k + m).sort((a, b) => experts[a]! - experts[b]! || a - b);
      return rowOf[mine[j]!]!;
    });
    const part = tf.gather(stacked, tf.tensor1d(rowsJ, 'int32')) as tf.Tensor2D;
    out = out === null ? part : tf.add<tf.Tensor2D>(out, part);
  }
  return {
    out: out!,
    routing: { logits: Float32Array.from(logits), experts: Int32Array.from(experts), weights: Float32Array.from(weights), numExperts: E, k },
  };
}
