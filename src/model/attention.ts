import * as tf from '@tensorflow/tfjs-core';
import { float32, ropeFused } from '../kernels/fused.js';
import { linear, onSimdKernels, type Linear } from '../kernels/linear.js';
import { fusedAttention } from '../kernels/simd/attention.js';
import type { LayerCache } from './cache.js';
import type { ModelConfig } from './config.js';
import type { HookScope } from './hooks.js';
import { maskBias } from './mask.js';
import { applyRope, type RopeTables } from './rope.js';

export interface AttentionWeights {
  readonly q: Linear; // [heads·headDim, hidden]
  readonly k: Linear; // [kvHeads·headDim, hidden]
  readonly v: Linear;
  readonly o: Linear; // [hidden, heads·headDim]
}

// Ranks are typed one way: every reshape names its rank (tf.reshape<tf.Rank.R3>), and the
// three moves between layouts have names.

/** [tokens, heads·headDim] → [tokens, heads, headDim] */
export function splitHeads(x: tf.Tensor2D, heads: number): tf.Tensor3D {
  return tf.reshape<tf.Rank.R3>(x, [x.shape[0], heads, x.shape[1] / heads]);
}

/** [tokens, heads, headDim] → [tokens, heads·headDim] */
export function mergeHeads(x: tf.Tensor3D): tf.Tensor2D {
  return tf.reshape<tf.Rank.R2>(x, [x.shape[0], x.shape[1] * x.shape[2]]);
}

/** [a, b, c] → [b, a, c]: tokens-first to heads-first and back. */
function swap01(x: tf.Tensor3D): tf.Tensor3D {
  return tf.transpose(x, [1, 0, 2]);
}

/**
 * Causal self-attention with grouped-query heads, RoPE and the sliding window.
 *
 * Grouped-query attention (Ainslie et al. 2023): `heads / kvHeads` consecutive query heads
 * share one key/value head, so query head h reads kv head ⌊h / group⌋. Rather than copy
 * each kv head `group` times, the query heads of a group are stacked along the sequence
 * axis and multiplied by their shared keys at once.
 *
 * @param x [tokens, hidden], already normalised
 * @param positions absolute position of each token
 * @param cache this layer's cache, or null for a plain full-sequence forward
 * @returns [tokens, hidden], the output projection (before the residual add)
 */
export function attention(x: tf.Tensor2D, w: AttentionWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null, hook: HookScope): tf.Tensor2D {
  const T = x.shape[0];
  const { numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const group = H / KV;

  const q = hook(splitHeads(linear(x, w.q), H), 'attn.hook_q'); // [tokens, heads, headDim]
  const k = hook(splitHeads(linear(x, w.k), KV), 'attn.hook_k'); // [tokens, kvHeads, headDim]
  const v = hook(splitHeads(linear(x, w.v), KV), 'attn.hook_v');
  const rotate = (t: tf.Tensor3D) => (onSimdKernels(w.q) ? ropeFused(t, rope.cosData, rope.sinData) : applyRope(t, rope));
  const qRot = hook(rotate(q), 'attn.hook_rot_q');
  const kRot = hook(rotate(k), 'attn.hook_rot_k');

  // Heads first for the matrix products.
  const newK = swap01(kRot); // [kvHeads, tokens, headDim]
  const newV = swap01(v);

  // With the simd kernels, one fused kernel does scores, mask, softmax and mixing, unless a
  // hook asks for the scores or the pattern, which only the composite path below forms.
  if (fusedAttentionFits(w, cfg) && !hook.wants('attn.hook_attn_scores') && !hook.wants('attn.hook_pattern')) {
    const z = fusedAttentionStep(float32(qRot), float32(newK), float32(newV), positions, cfg, cache);
    return project(hook(tf.tensor3d(z, [T, H, D]), 'attn.hook_z'), w.o, hook);
  }

  const seen = cache === null
    ? { k: newK, v: newV, positions }
    : cache.update(newK, newV, positions); // keys: [kvHeads, keys, headDim]
  const S = seen.positions.length;

  // [heads, tokens, headDim] → [kvHeads, group·tokens, headDim]: a group's queries side by side.
  const qGrouped = tf.reshape<tf.Rank.R3>(swap01(qRot), [KV, group * T, D]);
  const rawScores = tf.div(tf.matMul(qGrouped, seen.k, false, true), Math.sqrt(D)); // [kvHeads, group·tokens, keys]
  const bias = tf.tensor2d(maskBias(positions, seen.positions, cfg.slidingWindow), [T, S]);
  const scores = hook(tf.add<tf.Tensor3D>(tf.reshape<tf.Rank.R3>(rawScores, [H, T, S]), bias), 'attn.hook_attn_scores'); // [heads, tokens, keys]
  const pattern = hook(tf.softmax<tf.Tensor3D>(scores), 'attn.hook_pattern'); // softmax over keys

  const mixed = tf.matMul(tf.reshape<tf.Rank.R3>(pattern, [KV, group * T, S]), seen.v); // [kvHeads, group·tokens, headDim]
  const z = hook(swap01(tf.reshape<tf.Rank.R3>(mixed, [H, T, D])), 'attn.hook_z'); // [tokens, heads, headDim]
  return project(z, w.o, hook);
}

/**
 * The output projection. o_proj has no bias, so attn_out is the sum over heads of each
 * head's z times its own columns of W_O. Asked for `attn.hook_result`, it computes those
 * per-head outputs (one product per head, on whatever kernels hold W_O: head h's z with
 * every other head zeroed) and sums them; otherwise one product.
 *
 * @param z [tokens, heads, headDim]
 * @returns [tokens, hidden]
 */
function project(z: tf.Tensor3D, o: Linear, hook: HookScope): tf.Tensor2D {
  if (!hook.wants('attn.hook_result')) return linear(mergeHeads(z), o);
  const [T, H, D] = z.shape;
  const own = tf.reshape<tf.Rank.R4>(tf.eye(H), [H, 1, H, 1]); // head h keeps only its own slice
  const perHead = tf.reshape<tf.Rank.R2>(tf.mul(tf.expandDims(z, 0), own), [H * T, H * D]); // [heads·tokens, heads·headDim]
  const byHead = tf.reshape<tf.Rank.R3>(linear(perHead, o), [H, T, o.outFeatures]); // [heads, tokens, hidden]
  const result = hook(swap01(byHead), 'attn.hook_result'); // [tokens, heads, hidden]
  return tf.sum(result, 1);
}

/**
 * The fused kernel over one step: its keys and values, and with a cache those it holds (in
 * place when the cache lives in kernel memory, else copied next to the step's).
 * @param q [queries, heads, headDim], after RoPE: the step's last `queries` tokens (all of
 *   them by default; a query's result does not depend on which others come with it)
 * @param k [kvHeads, tokens, headDim], after RoPE; v likewise
 * @param out where to write z (else a new array)
 * @returns z [queries, heads, headDim]
 */
export function fusedAttentionStep(q: Float32Array, k: Float32Array, v: Float32Array, positions: readonly number[],
  cfg: ModelConfig, cache: LayerCache | null, out?: Float32Array, queries = positions.length): Float32Array {
  const { numHeads: H, numKvHeads: KV, headDim: D } = cfg;
  const shape = { heads: H, kvHeads: KV, headDim: D, window: cfg.slidingWindow };
  const queryPositions = queries === positions.length ? positions : positions.slice(positions.length - queries);
  const inPlace = cache?.attendInPlace(q, k, v, positions, shape, out, queryPositions) ?? null;
  if (inPlace !== null) return inPlace;
  return fusedAttention(q, queryPositions, shape, (into) => {
    if (cache !== null) return cache.updateInto(k, v, KV, D, positions, into);
    const a = into(positions.length);
    a.k.set(k);
    a.v.set(v);
    return positions;
  }, out);
}

/** Whether the fused kernel takes this model's heads (its rows go four floats at a time). */
export function fusedHeadsFit(cfg: ModelConfig): boolean {
  return cfg.headDim % 4 === 0;
}

/** The fused kernel serves models on the simd kernels whose head size it handles. */
function fusedAttentionFits(w: AttentionWeights, cfg: ModelConfig): boolean {
  return onSimdKernels(w.q) && fusedHeadsFit(cfg);
}
