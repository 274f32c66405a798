/**
 * Text → one vector from the model's hidden states, L2-normalised, of the hidden size.
 *
 * - `mean` (default): `<s>` + text, the final normalised hidden state (after the last
 *   RMSNorm, the input of lm_head) averaged over every token, `<s>` included.
 * - `last`: `<s>` + text + `</s>`, the final normalised hidden state of the last token (the
 *   `</s>`), as E5-style Mistral embedders (e5-mistral-7b-instruct) pool.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { Hooks } from '../model/hooks.js';
import type { Transformer } from '../model/transformer.js';
import { disposeResult } from '../model/transformer.js';
import type { Tokenizer } from '../tokenizer/index.js';

export type Pooling = 'mean' | 'last';
export const POOLINGS: readonly Pooling[] = ['mean', 'last'];

/** The ids a text is embedded from (see the pooling rules above). */
export function embeddingIds(tok: Tokenizer, text: string, pooling: Pooling): number[] {
  const ids = tok.encode(text, { bos: true });
  if (pooling === 'last' && tok.eosId !== null) ids.push(tok.eosId);
  return ids;
}

/** One text's embedding, [hidden], and how many tokens it took. */
export function embed(model: Transformer, tok: Tokenizer, text: string, pooling: Pooling): { vector: Float32Array; tokens: number } {
  const ids = embeddingIds(tok, text, pooling);
  // The final normalised hidden state, read where the forward forms it.
  const seen: { h?: Float32Array } = {}; // [tokens, hidden]
  const hooks: Hooks = new Map([['ln_final.hook_normalized', (t: tf.Tensor) => { seen.h = (t.dataSync() as Float32Array).slice(); }]]);
  const r = model.forward(ids, { hooks });
  try {
    const h = seen.h;
    if (h === undefined) throw new Error('ln_final.hook_normalized did not fire');
    const hidden = model.config.hiddenSize;
    const v = new Float64Array(hidden);
    const first = pooling === 'last' ? ids.length - 1 : 0;
    for (let t = first; t < ids.length; t++) for (let j = 0; j < hidden; j++) v[j]! += h[t * hidden + j]!;
    let norm = 0;
    for (let j = 0; j < hidden; j++) norm += v[j]! * v[j]!;
    norm = Math.sqrt(norm) || 1; // (mean and normalise: the mean's 1/T cancels)
    return { vector: Float32Array.from(v, (x) => x / norm), tokens: ids.length };
  } finally {
    disposeResult(r);
  }
}
