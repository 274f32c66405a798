/**
 * The logit lens (nostalgebraist 2020): read every layer's residual stream as if it were
 * the last one, through the final RMSNorm and the unembedding, and see which tokens it
 * already predicts.
 *
 *   row "embed": rmsNorm(hook_embed) · lm_headᵀ
 *   row l:       rmsNorm(blocks.l.hook_resid_post) · lm_headᵀ      (the last row is the model's logits)
 *
 * Worked example (mistral-demo, `<s>47+38=`, whose answer is 85): at the last position the
 * lens of layers 0–2 favours "7", a digit already in the prompt (p ≈ 0.6), with "8" at
 * 0.17, 0.19, 0.35; only the last layer commits to "8" (p ≈ 1.00). `mistral-ref trace`
 * prints this table and draws the grid.
 */
import * as tf from '@tensorflow/tfjs-core';
import { disposeResult, type Transformer } from '../model/transformer.js';
import { ActivationCache, runWithCache } from './activations.js';

export interface LensCell {
  /** Top-k token ids, most probable first. */
  readonly ids: number[];
  /** Their softmax probabilities under this row's logits. */
  readonly probs: number[];
  /** Probability this row gives the model's final top-1 token at this position. */
  readonly finalProb: number;
}

export interface LensRow {
  /** -1 for the embeddings, else the layer whose output (resid_post) is read. */
  readonly layer: number;
  /** "embed" or the layer index. */
  readonly label: string;
  /** One cell per position. */
  readonly positions: LensCell[];
}

export interface LogitLens {
  readonly topK: number;
  /** Rows in depth order: embed, layer 0, …, layer L−1. */
  readonly rows: LensRow[];
  /** The model's own top-1 prediction at each position (the last row's top-1). */
  readonly finalIds: number[];
}

/** Hook names the lens reads. */
export function lensHookNames(numLayers: number): string[] {
  return ['hook_embed', ...Array.from({ length: numLayers }, (_, l) => `blocks.${l}.hook_resid_post`)];
}

/**
 * Logit lens of `ids` (runs the model), or of an activation cache that holds
 * `lensHookNames(L)` (e.g. from a runWithCache the caller needs anyway).
 */
export function logitLens(model: Transformer, input: readonly number[] | ActivationCache, opts: { topK?: number } = {}): LogitLens {
  const topK = Math.min(opts.topK ?? 5, model.config.vocabSize);
  if (input instanceof ActivationCache) return lensOf(model, input, topK);
  const { result, cache } = runWithCache(model, input, { names: lensHookNames(model.config.numLayers) });
  try {
    return lensOf(model, cache, topK);
  } finally {
    disposeResult(result);
    cache.dispose();
  }
}

function lensOf(model: Transformer, cache: ActivationCache, topK: number): LogitLens {
  const c = model.config;
  const w = model.weights;
  const sources = lensHookNames(c.numLayers);
  // Read the rows from the last (the model's own logits) backwards, so every row can
  // report the probability of the final prediction.
  let finalIds: number[] = [];
  const rows: LensRow[] = [];
  try {
    for (let r = sources.length - 1; r >= 0; r--) {
      const T = cache.get(sources[r]!).shape[0]!;
      const V = c.vocabSize;
      const { values, indices, probs } = tf.tidy(() => {
        const resid = cache.get(sources[r]!) as tf.Tensor2D; // [tokens, hidden]
        // The model's own head, so the last row is the model's logits.
        const logits = model.unembed(model.finalNorm(resid)); // [tokens, vocab]
        const p = tf.softmax(logits);
        const top = tf.topk(p, topK); // [tokens, k], most probable first
        return { values: top.values.dataSync(), indices: top.indices.dataSync(), probs: p.dataSync() };
      });
      if (finalIds.length === 0) finalIds = Array.from({ length: T }, (_, t) => indices[t * topK]!);
      const finalProbs = finalIds.map((id, t) => probs[t * V + id]!);
      const layer = r - 1;
      rows.unshift({
        layer,
        label: layer < 0 ? 'embed' : String(layer),
        positions: Array.from({ length: T }, (_, t) => ({
          ids: Array.from(indices.subarray(t * topK, (t + 1) * topK)),
          probs: Array.from(values.subarray(t * topK, (t + 1) * topK)),
          finalProb: finalProbs[t]!,
        })),
      });
    }
  } finally {
    w.releaseHead();
  }
  return { topK, rows, finalIds };
}
