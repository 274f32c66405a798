/**
 * Attention patterns: one head's [queries, keys] matrix, and how spread out each head's
 * attention is (entropy).
 *
 * Entropy of one query's row p over the keys it can see: H = −Σ p·ln p (nats; masked keys
 * have p = 0 and add nothing). 0 means all attention on one key; ln n means spread evenly
 * over n keys. A head that always looks at BOS has H ≈ 0; a head that averages its window
 * has H ≈ ln(min(i + 1, W)).
 */
import type * as tf from '@tensorflow/tfjs-core';
import { HookError } from '../model/hooks.js';
import { disposeResult, type Transformer } from '../model/transformer.js';
import { ActivationCache, runWithCache } from './activations.js';

/** Head `head` of a pattern [heads, tokens, keys] as rows of numbers. */
export function headOf(pattern: tf.Tensor, head: number): number[][] {
  const [H, T, S] = pattern.shape as [number, number, number];
  if (!Number.isInteger(head) || head < 0 || head >= H) throw new HookError(`head ${head} is outside [0, ${H})`);
  const data = pattern.dataSync();
  return Array.from({ length: T }, (_, i) => Array.from(data.subarray((head * T + i) * S, (head * T + i + 1) * S)));
}

/**
 * The attention pattern of one head: [queries, keys], rows summing to 1. Runs the model,
 * or reads `blocks.{layer}.attn.hook_pattern` from a cache.
 */
export function attentionPattern(model: Transformer, input: readonly number[] | ActivationCache, layer: number, head: number): number[][] {
  const name = `blocks.${layer}.attn.hook_pattern`;
  if (input instanceof ActivationCache) return headOf(input.get(name), head);
  const { result, cache } = runWithCache(model, input, { names: [name] });
  try {
    return headOf(cache.get(name), head);
  } finally {
    disposeResult(result);
    cache.dispose();
  }
}

/** −Σ p ln p of one distribution, in nats (zeros contribute nothing). */
export function entropy(p: ArrayLike<number>): number {
  let h = 0;
  for (let i = 0; i < p.length; i++) {
    const x = p[i]!;
    if (x > 0) h -= x * Math.log(x);
  }
  return h;
}

/**
 * Entropy of every (head, query) row of a pattern [heads, tokens, keys].
 * @returns perRow [heads][tokens] and perHead, the mean over queries
 */
export function attentionEntropy(pattern: tf.Tensor): { perRow: number[][]; perHead: number[] } {
  const [H, T, S] = pattern.shape as [number, number, number];
  const data = pattern.dataSync();
  const perRow = Array.from({ length: H }, (_, h) =>
    Array.from({ length: T }, (_, i) => entropy(data.subarray((h * T + i) * S, (h * T + i + 1) * S))));
  return { perRow, perHead: perRow.map((rows) => rows.reduce((a, b) => a + b, 0) / T) };
}
