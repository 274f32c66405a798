import * as tf from '@tensorflow/tfjs-core';
import { linear, type Linear } from '../kernels/linear.js';
import { feedForward, type FeedForwardWeights } from './feedforward.js';
import { HookError, type HookScope } from './hooks.js';

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
 * @returns [tokens, hidden]; the routing decisions are the moe.hook_* points
 */
export function mixtureOfExperts(x: tf.Tensor2D, w: MoeWeights, k: number, hook: HookScope): tf.Tensor2D {
  const T = x.shape[0];
  const E = w.numExperts;
  const routerLogits = hook(linear(x, w.router), 'moe.hook_router_logits'); // [tokens, experts]
  const logits = routerLogits.dataSync() as Float32Array;

  const chosen = new Int32Array(T * k);
  const mix = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const r = routeToken(logits.subarray(t * E, (t + 1) * E), k);
    chosen.set(r.experts, t * k);
    mix.set(r.weights, t * k);
  }
  // Hooks may overrule the router (force an expert, ablate one): read back what they return.
  const experts = hook(tf.tensor2d(chosen, [T, k], 'int32'), 'moe.hook_expert_indices').dataSync() as Int32Array;
  checkExperts(experts, T, k, E, hook.prefix);
  const weights = hook(mixingWeights(routerLogits, chosen, mix, k), 'moe.hook_expert_weights'); // [tokens, k]

  // The combine, as the math says it: for each expert in index order, run it on the tokens
  // routed to it and add its weighted output into their rows. Each token thus sums its k
  // experts in expert-index order (as transformers' index_add_ over experts does), so the
  // float32 sum matches for any k. The add is a gather from the expert's rows plus a zero
  // row (tokens it did not get read the zero, adding exactly nothing): tfjs has no
  // differentiable scatter, and a gather's gradient is the scatter-add back.
  let out: tf.Tensor2D = tf.zerosLike(x);
  for (let e = 0; e < E; e++) {
    const slots: number[] = [];
    for (let i = 0; i < T * k; i++) if (experts[i] === e) slots.push(i);
    if (slots.length === 0) continue;
    const tokens = slots.map((i) => Math.floor(i / k));
    const xe = tf.gather(x, tf.tensor1d(tokens, 'int32')); // [routed, hidden]
    const we = tf.reshape(tf.gather(tf.reshape(weights, [T * k]), tf.tensor1d(slots, 'int32')), [slots.length, 1]);
    const ye = tf.mul(feedForward(xe, w.expert(e)), we); // [routed, hidden]
    const rowOf = new Int32Array(T).fill(slots.length); // the zero row, unless routed here
    tokens.forEach((t, r) => { rowOf[t] = r; });
    const padded = tf.concat([ye, tf.zeros([1, x.shape[1]])], 0); // [routed + 1, hidden]
    out = tf.add(out, tf.gather(padded, tf.tensor1d(rowOf, 'int32')));
  }
  return out;
}

/**
 * The mixing weights as a tensor: the values routeToken computed (`mix`), with the gradient
 * of the softmax over the chosen logits, so gradients reach the router (a constant tensor
 * would cut them off). Softmax's backward: dx = p ⊙ (dy − Σ_j dy_j p_j).
 *
 * @param routerLogits [tokens, experts]
 * @param chosen [tokens·k] the router's experts
 */
function mixingWeights(routerLogits: tf.Tensor2D, chosen: Int32Array, mix: Float32Array, k: number): tf.Tensor2D {
  const [T, E] = routerLogits.shape;
  const flat = Int32Array.from(chosen, (e, i) => Math.floor(i / k) * E + e);
  const top = tf.reshape(tf.gather(tf.reshape(routerLogits, [T * E]), tf.tensor1d(flat, 'int32')), [T, k]); // [tokens, k]
  // customGrad's declared type takes (...inputs | save); ours is (logits, save).
  const softmaxOfTop = tf.customGrad(((_logits: tf.Tensor, save: tf.GradSaveFunc) => {
    const p = tf.tensor2d(mix, [T, k]);
    save([p]);
    return {
      value: p,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(saved[0]!, tf.sub(dy, tf.sum(tf.mul(dy, saved[0]!), -1, true))),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return softmaxOfTop(top) as tf.Tensor2D;
}

/** A replacement of hook_expert_indices must name k distinct experts per token. */
function checkExperts(experts: Int32Array, T: number, k: number, E: number, prefix: string): void {
  for (let t = 0; t < T; t++) {
    const row = Array.from(experts.subarray(t * k, (t + 1) * k));
    const bad = row.find((e) => e < 0 || e >= E);
    if (bad !== undefined) {
      throw new HookError(`${prefix}moe.hook_expert_indices: expert ${bad} for token ${t} is outside [0, ${E})`);
    }
    if (new Set(row).size !== k) {
      throw new HookError(`${prefix}moe.hook_expert_indices: token ${t} is routed to [${row}], expected ${k} distinct experts`);
    }
  }
}
