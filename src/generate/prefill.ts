/**
 * Prefill: run the prompt through the model to fill the cache, in chunks.
 *
 * Each chunk attends to what the cache holds plus its own keys, with the mask computed
 * from absolute positions (mask.ts), so chunking changes nothing but the order of float
 * additions. With a sliding window W the default chunk is W: a chunk then attends to at
 * most W cached slots + W new keys, so prefill memory stays O(W) however long the prompt.
 * Worked example, W = 4, a 10-token prompt, chunks of 4:
 *
 *   chunk 0–3  attends keys 0–3                          cache slots [0 1 2 3]
 *   chunk 4–7  attends slots 0–3 + keys 4–7              cache slots [4 5 6 7]
 *              (query 4 sees 1–4, query 7 sees 4–7)
 *   chunk 8–9  attends slots 4–7 + keys 8–9              cache slots [8 9 6 7]
 *
 * Only the last chunk's last row of logits is kept: it predicts the first new token.
 */
import type { ModelCache } from '../model/cache.js';
import type { Hooks } from '../model/hooks.js';
import { disposeResult, type Transformer } from '../model/transformer.js';

/** The default chunk: W with a sliding window, else the whole prompt at once. */
export function defaultChunk(model: Transformer): number {
  return model.config.slidingWindow ?? Infinity;
}

/**
 * Feeds `ids` into `cache` (positions from cache.length on), `chunk` tokens at a time.
 * The caller has checked the ids (`model.checkIds`), so a bad id cannot stop us halfway.
 * `hooks` run in every chunk's forward (each sees its chunk's absolute positions).
 * @returns the logits after the last id, [vocab]
 */
export function prefill(model: Transformer, ids: readonly number[], cache: ModelCache, chunk: number, hooks?: Hooks): Float32Array {
  let last: Float32Array | null = null;
  for (let start = 0; start < ids.length; start += chunk) {
    const r = model.forward(ids.slice(start, start + chunk), { cache, lastOnly: true, ...(hooks ? { hooks } : {}) }); // logits [1, vocab]
    try {
      if (start + chunk >= ids.length) last = Float32Array.from(r.logits.dataSync()); // a copy: the backend may reuse its buffer
    } finally {
      disposeResult(r);
    }
  }
  return last!;
}
