import * as tf from '@tensorflow/tfjs-core';
import { ropeFused } from '../kernels/fused.js';
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

  const q = hook('attn.hook_q', tf.reshape<tf.Rank.R3>(linear(x, w.q), [T, H, D])); // [tokens, heads, headDim]
  const k = hook('attn.hook_k', tf.reshape<tf.Rank.R3>(linear(x, w.k), [T, KV, D])); // [tokens, kvHeads, headDim]
  const v = hook('attn.hook_v', tf.reshape<tf.Rank.R3>(linear(x, w.v), [T, KV, D]));
  const rotate = (t: tf.Tensor3D) => (onSimdKernels(w.q) ? ropeFused(t, rope.cosData, rope.sinData) : applyRope(t, rope));
  const qRot = hook('attn.hook_rot_q', rotate(q));
  const kRot = hook('attn.hook_rot_k', rotate(k));

  // Heads first for the matrix products.
  const newK = tf.transpose(kRot, [1, 0, 2]) as tf.Tensor3D; // [kvHeads, tokens, headDim]
  const newV = tf.transpose(v, [1, 0, 2]) as tf.Tensor3D;

  // With the simd kernels, one fused kernel does scores, mask, softmax and mixing, unless a
  // hook asks for the scores or the pattern, which only the composite path below forms.
  if (fusedAttentionFits(w, cfg) && !hook.wants?.('attn.hook_attn_scores') && !hook.wants?.('attn.hook_pattern')) {
    const shape = { heads: H, kvHeads: KV, headDim: D, window: cfg.slidingWindow };
    const qData = qRot.dataSync() as Float32Array; // [tokens, heads, headDim]
    const zData = fusedAttention(qData, positions, shape, (into) => {
      if (cache !== null) return cache.updateInto(newK, newV, positions, into);
      const { k: kOut, v: vOut } = into(T);
      kOut.set(newK.dataSync());
      vOut.set(newV.dataSync());
      return positions;
    });
    const z = hook('attn.hook_z', tf.tensor3d(zData, [T, H, D]));
    return linear(tf.reshape<tf.Rank.R2>(z, [T, H * D]), w.o);
  }

  const seen = cache === null
    ? { k: newK, v: newV, positions }
    : cache.update(newK, newV, positions); // keys: [kvHeads, keys, headDim]
  const S = seen.positions.length;

  // [heads, tokens, headDim] → [kvHeads, group·tokens, headDim]: a group's queries side by side.
  const qGrouped = tf.reshape(tf.transpose(qRot, [1, 0, 2]), [KV, group * T, D]);
  const rawScores = tf.div(tf.matMul(qGrouped, seen.k, false, true), Math.sqrt(D)); // [kvHeads, group·tokens, keys]
  const bias = tf.tensor2d(maskBias(positions, seen.positions, cfg.slidingWindow), [T, S]);
  const scores = hook('attn.hook_attn_scores', tf.add<tf.Tensor3D>(tf.reshape(rawScores, [H, T, S]), bias)); // [heads, tokens, keys]
  const pattern = hook('attn.hook_pattern', tf.softmax<tf.Tensor3D>(scores)); // softmax over keys

  const mixed = tf.matMul(tf.reshape(pattern, [KV, group * T, S]), seen.v); // [kvHeads, group·tokens, headDim]
  const z = hook('attn.hook_z', tf.transpose<tf.Tensor3D>(tf.reshape(mixed, [H, T, D]), [1, 0, 2])); // [tokens, heads, headDim]
  return linear(tf.reshape<tf.Rank.R2>(z, [T, H * D]), w.o);
}

/** The fused kernel serves models on the simd kernels whose head size it handles. */
function fusedAttentionFits(w: AttentionWeights, cfg: ModelConfig): boolean {
  return onSimdKernels(w.q) && cfg.headDim % 4 === 0;
}
