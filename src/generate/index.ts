/**
 * Text generation: prefill the prompt into a KV cache (in chunks), then one token at a
 * time: sample from the last logits, feed the token back, repeat.
 *
 *   for await (const t of generate(model, [1, 24, 27], { maxNewTokens: 8 })) process(t.id);
 *
 * The loop is transformers' `generate()` (the golden step logits were made with it):
 * step 0 reads the prefill's last logits, step s > 0 the logits after feeding token s−1.
 * The last token is never fed unless the caller owns the cache (see `cache` below), so
 * n tokens cost one prefill and n − 1 single-token forwards.
 *
 * Memory: every forward is disposed before the next one, and the cache keeps its keys and
 * values in plain arrays, not tensors (at most W rows per layer with a sliding window, see
 * model/cache.ts), so the number of live tensors is the same after 10 tokens as after 100.
 */
import { randomInt } from 'node:crypto';
import type { ModelCache } from '../model/cache.js';
import type { Hooks } from '../model/hooks.js';
import { InputError } from '../model/errors.js';
import { disposeResult, type Transformer } from '../model/transformer.js';
import type { TokenConstraint } from './constrain.js';
import { defaultChunk, prefill } from './prefill.js';
import { checkSamplingOptions, logProbability, sampleToken, SeededRandom, type SamplingOptions } from './sampling.js';

export { argmax, candidates, logProbability, sampleToken, SeededRandom, type SamplingOptions } from './sampling.js';
export { defaultChunk, prefill } from './prefill.js';
export { TextStream } from './text.js';
export { compileSchema, jsonConstraint, JsonConstraint, pieceText, SchemaError, type TokenConstraint } from './constrain.js';
export { ConversationCache } from './conversation.js';

/** Why generation ended; carried by the last token. */
export type StopReason =
  | 'eos' // an end-of-sequence id of the config (stopAtEos)
  | 'stop' // one of the caller's stopIds
  | 'length' // maxNewTokens reached
  | 'context'; // no sliding window and max_position_embeddings reached: the next token has no position

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 128). */
  readonly maxNewTokens?: number;
  /** Seed for sampling, an integer in [0, 2³²). Unset: a random one. Unused when greedy. */
  readonly seed?: number;
  /** Stop after any of these ids (the id is yielded). */
  readonly stopIds?: readonly number[];
  /** Stop after the config's eos_token_id (default true). */
  readonly stopAtEos?: boolean;
  /** Prompt tokens per prefill forward (default W with a sliding window, else the whole prompt). */
  readonly prefillChunk?: number;
  /**
   * Continue from this cache (a conversation): the prompt's positions start at cache.length.
   * The cache stays the caller's: when generation ends, however it ends, it holds every
   * token yielded (the last one is fed for this), so the next call continues the text.
   * Without it a fresh cache is made and disposed.
   */
  readonly cache?: ModelCache;
  /** Attach each step's full row of logits to its token (parity checks, tools). */
  readonly returnLogits?: boolean;
  /** Masks each step's logits before sampling (constrained decoding, e.g. a JSON schema; see constrain.ts). */
  readonly constraint?: TokenConstraint;
  /**
   * Hooks for every forward: the prefill's chunks and each step. A hook's context gives the
   * absolute positions of the tokens it sees (steering from position p on, ablating while
   * generating). Names are not checked here; `generateWithHooks` (src/inspect) checks them.
   */
  readonly hooks?: Hooks;
}

const GENERATE_OPTIONS = new Set(['temperature', 'topK', 'topP', 'maxNewTokens', 'seed', 'stopIds', 'stopAtEos',
  'prefillChunk', 'cache', 'returnLogits', 'hooks', 'constraint']);

export interface GeneratedToken {
  readonly id: number;
  /** 0 for the first generated token. */
  readonly index: number;
  /** Absolute position of the token in the text (prompt tokens come first). */
  readonly position: number;
  /** The model's log-probability of `id`: log softmax of the raw logits (temperature 1, no filtering). */
  readonly logprob: number;
  /** Set on the last token: why generation stops after it. */
  readonly stopReason?: StopReason;
  /** The logits this token was chosen from, [vocab] (with returnLogits). */
  readonly logits?: Float32Array;
}

export const DEFAULT_MAX_NEW_TOKENS = 128;

/** A seed for when the caller gives none (crypto, not Math.random: the seed can be reported and replayed). */
export function randomSeed(): number {
  return randomInt(0, 2 ** 32 - 1);
}

function checkOptions(model: Transformer, o: GenerateOptions): void {
  const unknown = Object.keys(o).find((k) => !GENERATE_OPTIONS.has(k));
  if (unknown !== undefined) throw new InputError(`unknown generate option ${JSON.stringify(unknown)} (known: ${[...GENERATE_OPTIONS].join(', ')})`);
  if (o.hooks !== undefined && !(o.hooks instanceof Map)) throw new InputError('generate: hooks must be a Map from hook name to function');
  checkSamplingOptions(o);
  if (o.maxNewTokens !== undefined && (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0)) {
    throw new InputError(`maxNewTokens must be an integer ≥ 0, got ${o.maxNewTokens}`);
  }
  const chunk = o.prefillChunk;
  if (chunk !== undefined && chunk !== Infinity && (!Number.isInteger(chunk) || chunk < 1)) {
    throw new InputError(`prefillChunk must be an integer ≥ 1, got ${chunk}`);
  }
  const vocab = model.config.vocabSize;
  for (const id of o.stopIds ?? []) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new InputError(`stop id ${id} is outside the vocabulary [0, ${vocab})`);
  }
}

/**
 * The generation loop, synchronous: each `next()` computes one token. `generate` wraps it
 * for async callers; tests and tools that want plain arrays use it (or `generateSync`).
 */
export function* generateTokens(model: Transformer, promptIds: readonly number[], opts: GenerateOptions = {}): Generator<GeneratedToken, void, undefined> {
  checkOptions(model, opts);
  const c = model.config;
  const maxNew = opts.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
  const rng = new SeededRandom(opts.seed ?? ((opts.temperature ?? 0) > 0 ? randomSeed() : 0));
  const eos = new Set(opts.stopAtEos === false ? [] : c.eosTokenIds);
  const stopIds = new Set(opts.stopIds ?? []);
  const ownsCache = opts.cache === undefined;
  const cache = opts.cache ?? model.createCache();
  /** Without a window, position p exists only for p < max_position_embeddings. */
  const hasRoom = () => c.slidingWindow !== null || c.maxPositionEmbeddings === null || cache.length < c.maxPositionEmbeddings;

  let pending: number | null = null; // yielded but not yet in the cache
  let failed = false;
  try {
    model.checkIds(promptIds, cache.length); // all of it before the first chunk runs
    if (maxNew === 0 && ownsCache) return;
    let logits = prefill(model, promptIds, cache, opts.prefillChunk ?? defaultChunk(model), opts.hooks);
    if (maxNew === 0) return;
    for (let index = 0; ; index++) {
      const id = sampleToken(opts.constraint ? opts.constraint.mask(logits) : logits, opts, rng);
      opts.constraint?.accept(id);
      pending = id;
      const stopReason: StopReason | undefined = eos.has(id) ? 'eos'
        : stopIds.has(id) ? 'stop'
          : index + 1 >= maxNew ? 'length'
            : !hasRoom() ? 'context'
              : undefined;
      yield {
        id,
        index,
        position: cache.length,
        logprob: logProbability(logits, id),
        ...(stopReason === undefined ? {} : { stopReason }),
        ...(opts.returnLogits ? { logits } : {}),
      };
      if (stopReason !== undefined) return;
      logits = step(model, id, cache, opts.hooks);
      pending = null;
    }
  } catch (e) {
    failed = true; // a forward may have stopped halfway through the layers: feed nothing more
    throw e;
  } finally {
    if (ownsCache) cache.dispose();
    else if (pending !== null && !failed && hasRoom()) step(model, pending, cache, opts.hooks);
  }
}

/** Feeds one token; returns the logits that predict the next, [vocab]. */
function step(model: Transformer, id: number, cache: ModelCache, hooks?: Hooks): Float32Array {
  const r = model.forward([id], { cache, lastOnly: true, ...(hooks ? { hooks } : {}) }); // logits [1, vocab]
  try {
    return Float32Array.from(r.logits.dataSync());
  } finally {
    disposeResult(r);
  }
}

/**
 * Streams generated tokens. Between tokens it yields to the event loop, so output is
 * written and signals are handled while a long generation runs; breaking out of the
 * loop stops generation and frees the cache.
 */
export async function* generate(model: Transformer, promptIds: number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  for (const token of generateTokens(model, promptIds, opts)) {
    yield token;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** Every generated token at once (tests, scripts). */
export function generateSync(model: Transformer, promptIds: readonly number[], opts: GenerateOptions = {}): GeneratedToken[] {
  return [...generateTokens(model, promptIds, opts)];
}
