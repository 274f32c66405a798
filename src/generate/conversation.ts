/**
 * A KV cache kept across the turns of a conversation (chat, a server's sessions).
 *
 * Each turn's prompt is the whole conversation re-encoded. The cache holds the tokens of
 * the turns before (prompts and answers, as generated); when they are a prefix of the new
 * prompt, only the rest is run. When they are not (the answer re-encodes differently, the
 * conversation was edited), the cache starts over: the result is the same either way, only
 * the cost differs.
 *
 *   const conv = new ConversationCache(model);
 *   for await (const t of conv.generate(tok.encodeChat({ messages }), { maxNewTokens: 256 })) ...
 *   conv.reused;       // prompt tokens this turn found in the cache
 *   conv.dispose();
 */
import type { ModelCache } from '../model/cache.js';
import type { Transformer } from '../model/transformer.js';
import { generate, type GeneratedToken, type GenerateOptions } from './index.js';

export class ConversationCache {
  private cache: ModelCache | null = null;
  /** The tokens the cache holds, in order. */
  private cached: number[] = [];
  /** Prompt tokens the last `generate` found in the cache and did not run again. */
  reused = 0;

  constructor(private readonly model: Transformer) {}

  /** Tokens the cache holds now (the conversation so far, as run). */
  get length(): number {
    return this.cached.length;
  }

  /**
   * Generates the answer to `promptIds`, the whole conversation so far. Like `generate`,
   * but the cache is this object's: breaking out early keeps what was yielded.
   */
  async *generate(promptIds: readonly number[], opts: Omit<GenerateOptions, 'cache'> = {}): AsyncGenerator<GeneratedToken> {
    // At least one prompt token must run to get logits: a prompt equal to the cache starts over.
    if (this.cache === null || !startsWith(promptIds, this.cached) || this.cached.length === promptIds.length) this.reset();
    const cache = (this.cache ??= this.model.createCache());
    this.reused = this.cached.length;
    const generated: number[] = [];
    let failed = false;
    try {
      for await (const t of generate(this.model, promptIds.slice(this.cached.length), { ...opts, cache })) {
        generated.push(t.id);
        yield t;
      }
    } catch (e) {
      failed = true; // a forward may have stopped halfway: the cache is not trusted
      throw e;
    } finally {
      if (failed) this.reset();
      else this.cached = [...promptIds, ...generated].slice(0, cache.length);
    }
  }

  /** Forgets the conversation (frees the cache). */
  reset(): void {
    this.cache?.dispose();
    this.cache = null;
    this.cached = [];
  }

  dispose(): void {
    this.reset();
  }
}

function startsWith(ids: readonly number[], prefix: readonly number[]): boolean {
  return prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id);
}
