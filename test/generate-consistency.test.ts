/**
 * Self-consistency of the caches (no reference file needed): cached token-by-token
 * decoding, chunked prefill and the rolling cache all equal one full forward whose mask
 * does the windowing, within 5e-5. mistral-tiny is loaded with W = 3 so that a 37-token
 * prompt is twelve windows long and the rolling cache wraps around many times.
 * Then memory (tensor count and cache bytes stop growing) and bad input.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSync, generateTokens, prefill } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { FullCache, RollingCache } from '../src/model/cache.js';
import { InputError } from '../src/model/errors.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir } from './helpers/fixtures.js';

const TOL = 5e-5;

/** A 37-token prompt of mistral-tiny's reference (p0), written out so this file stands alone. */
const PROMPT = [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913, 118, 96, 842, 828, 944, 588, 699, 656, 730,
  400, 431, 526, 674, 928, 877, 862, 229, 160, 792, 227, 329, 108, 47, 309, 159, 812];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Logits of every position from one forward without a cache: [tokens · vocab]. */
function fullForward(model: Transformer, ids: readonly number[]): Float32Array {
  const r = model.forward(ids);
  const out = Float32Array.from(r.logits.dataSync());
  disposeResult(r);
  return out;
}

/** Logits of every position, feeding `ids` into one cache `chunk` tokens at a time. */
function chunkedForward(model: Transformer, ids: readonly number[], chunk: number): Float32Array {
  const cache = model.createCache();
  const out = new Float32Array(ids.length * model.config.vocabSize);
  for (let start = 0; start < ids.length; start += chunk) {
    const r = model.forward(ids.slice(start, start + chunk), { cache });
    out.set(r.logits.dataSync(), start * model.config.vocabSize);
    disposeResult(r);
  }
  cache.dispose();
  return out;
}

let window3: Transformer;
let window8: Transformer;
let noWindow: Transformer;

beforeAll(async () => {
  await useBackend('cpu');
  window3 = Transformer.load(modelDir('mistral-tiny'), { overrides: { slidingWindow: 3 } });
  window8 = Transformer.load(modelDir('mistral-tiny'));
  noWindow = Transformer.load(modelDir('mistral-nowindow'));
});

afterAll(() => {
  window3.dispose();
  window8.dispose();
  noWindow.dispose();
});

describe('caches equal the full forward', () => {
  it('W = 3 really changes the model (so the comparisons below test the window)', () => {
    const d = maxAbsDiff(fullForward(window3, PROMPT), fullForward(window8, PROMPT));
    expect(d).toBeGreaterThan(1e-2);
  });

  it.each([
    ['W = 3, rolling cache of 3 slots', () => window3],
    ['W = 8 (the checkpoint)', () => window8],
    ['no window, growing cache', () => noWindow],
  ] as const)('token-by-token decoding with a cache: %s', (_, get) => {
    const model = get();
    const before = tf.memory().numTensors;
    const d = maxAbsDiff(chunkedForward(model, PROMPT, 1), fullForward(model, PROMPT));
    expect(d).toBeLessThanOrEqual(TOL);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('the W = 3 cache is a rolling one, so the text is twelve times its memory', () => {
    const cache = window3.createCache();
    expect(cache.layers.every((l) => l instanceof RollingCache && l.window === 3)).toBe(true);
    expect(noWindow.createCache().layers.every((l) => l instanceof FullCache)).toBe(true);
    expect(PROMPT.length).toBeGreaterThan(12 * 3);
  });

  it.each([2, 3, 4, 5, 7, 16, 37])('chunked prefill, chunks of %i, equals unchunked (W = 3)', (chunk) => {
    const d = maxAbsDiff(chunkedForward(window3, PROMPT, chunk), fullForward(window3, PROMPT));
    expect(d).toBeLessThanOrEqual(TOL);
  });

  it.each([1, 3, 5, 8, 37])('prefill() in chunks of %i returns the last row of the full forward', (chunk) => {
    for (const model of [window3, window8, noWindow]) {
      const cache = model.createCache();
      const last = prefill(model, PROMPT, cache, chunk);
      expect(cache.length).toBe(PROMPT.length);
      cache.dispose();
      const vocab = model.config.vocabSize;
      const full = fullForward(model, PROMPT).subarray((PROMPT.length - 1) * vocab);
      expect(maxAbsDiff(last, full)).toBeLessThanOrEqual(TOL);
    }
  });

  it('generation gives the same tokens and logits whatever the prefill chunk', () => {
    const run = (prefillChunk: number) => generateSync(window3, PROMPT, { maxNewTokens: 12, stopAtEos: false, returnLogits: true, prefillChunk });
    const whole = run(Infinity);
    for (const chunk of [1, 3, 5]) {
      const chunked = run(chunk);
      expect(chunked.map((t) => t.id)).toEqual(whole.map((t) => t.id));
      chunked.forEach((t, s) => expect(maxAbsDiff(t.logits!, whole[s]!.logits!)).toBeLessThanOrEqual(TOL));
    }
  });

  it('generated text fed back whole gives the logits each step was chosen from (W = 3, 3 × W new tokens)', () => {
    const tokens = generateSync(window3, PROMPT, { maxNewTokens: 9, stopAtEos: false, returnLogits: true });
    const text = [...PROMPT, ...tokens.map((t) => t.id)];
    const full = fullForward(window3, text);
    const vocab = window3.config.vocabSize;
    tokens.forEach((t) => {
      const row = full.subarray((t.position - 1) * vocab, t.position * vocab); // the row that predicts position t.position
      expect(maxAbsDiff(t.logits!, row)).toBeLessThanOrEqual(TOL);
    });
  });

  it('a caller\'s cache ends up holding every yielded token, so the next call continues the text', () => {
    const cache = window3.createCache();
    const first = generateSync(window3, PROMPT.slice(0, 20), { maxNewTokens: 4, stopAtEos: false, cache, returnLogits: true });
    expect(cache.length).toBe(24);
    const second = generateSync(window3, PROMPT.slice(20, 25), { maxNewTokens: 3, stopAtEos: false, cache, returnLogits: true });
    expect(cache.length).toBe(32);
    expect(second[0]!.position).toBe(29);
    cache.dispose();

    const text = [...PROMPT.slice(0, 20), ...first.map((t) => t.id), ...PROMPT.slice(20, 25), ...second.map((t) => t.id)];
    const full = fullForward(window3, text);
    const vocab = window3.config.vocabSize;
    for (const t of [...first, ...second]) {
      expect(maxAbsDiff(t.logits!, full.subarray((t.position - 1) * vocab, t.position * vocab))).toBeLessThanOrEqual(TOL);
    }
  });
});

describe('memory', () => {
  /** Live tensors and cache bytes after each generated token. */
  function track(model: Transformer, n: number): { tensors: number[]; bytes: number[]; lengths: number[] } {
    const cache = model.createCache();
    const tensors: number[] = [];
    const bytes: number[] = [];
    const lengths: number[] = [];
    for (const _ of generateTokens(model, [1], { maxNewTokens: n, stopAtEos: false, cache })) {
      tensors.push(tf.memory().numTensors);
      bytes.push(cache.bytes);
      lengths.push(cache.length);
    }
    cache.dispose();
    return { tensors, bytes, lengths };
  }

  it('live tensors are the same after 10 and after 100 generated tokens, and back to the start after', () => {
    for (const model of [window8, noWindow]) {
      const before = tf.memory().numTensors;
      const { tensors } = track(model, 100);
      expect(tensors[99]).toBe(tensors[9]);
      expect(new Set(tensors).size).toBe(1);
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('the rolling cache grows by one row per token up to W, then stops; the full cache grows by one row per token', () => {
    const c = window8.config;
    const W = 8;
    // keys + values, float32, per layer: 2 · 4 bytes · kvHeads · slots · headDim
    const row = 2 * 4 * c.numLayers * c.numKvHeads * c.headDim;
    const rolling = track(window8, 5 * W);
    rolling.bytes.forEach((b, i) => expect(b).toBe(row * Math.min(rolling.lengths[i]!, W)));
    expect(rolling.bytes.at(-1)).toBe(row * W);

    const n = noWindow.config;
    const fullRow = 2 * 4 * n.numLayers * n.numKvHeads * n.headDim;
    const full = track(noWindow, 5 * W);
    full.bytes.forEach((b, i) => expect(b).toBe(fullRow * full.lengths[i]!));
    expect(full.bytes.at(-1)).toBe(fullRow * 5 * W);
  });

  it('mistral-demo (W = 16): same tensor count after 10 and 100 tokens, cache bytes flat', async () => {
    const demo = Transformer.load(modelDir('mistral-demo'));
    try {
      const { tensors, bytes } = track(demo, 100);
      expect(tensors[99]).toBe(tensors[9]);
      expect(bytes[99]).toBe(bytes[15]);
    } finally {
      demo.dispose();
    }
  });
});

describe('bad input', () => {
  const err = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e;
    }
    throw new Error('expected an error');
  };

  it('an id outside the vocabulary, anywhere in a chunked prompt, is refused before any chunk runs', () => {
    const cache = window8.createCache();
    const ids = [...PROMPT.slice(0, 20), 1000];
    const e = err(() => generateSync(window8, ids, { cache, prefillChunk: 4 }));
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toBe('token id 1000 at index 20 is outside the vocabulary [0, 1000)');
    expect(cache.length).toBe(0);
    cache.dispose();
    expect((err(() => generateSync(window8, [1, -1])) as Error).message).toBe('token id -1 at index 1 is outside the vocabulary [0, 1000)');
    expect((err(() => generateSync(window8, [1, 2.5])) as Error).message).toBe('token id 2.5 at index 1 is outside the vocabulary [0, 1000)');
  });

  it('an empty prompt', () => {
    const e = err(() => generateSync(window8, []));
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toBe('empty input: at least one token id is needed');
  });

  it('a prompt longer than max_position_embeddings, without a window', () => {
    const short = Transformer.load(modelDir('mistral-nowindow'), { overrides: { maxPositionEmbeddings: 8 } });
    try {
      const e = err(() => generateSync(short, PROMPT.slice(0, 9), { prefillChunk: 4 }));
      expect(e).toBeInstanceOf(InputError);
      expect((e as Error).message).toBe('sequence of 9 tokens exceeds max_position_embeddings 8 (this model has no sliding window to roll over)');
      // A prompt that fits generates until the context is full: positions 6 and 7 are fed,
      // the third token (position 8) is yielded and generation stops.
      const before = tf.memory().numTensors;
      const tokens = generateSync(short, PROMPT.slice(0, 6), { maxNewTokens: 10, stopAtEos: false });
      expect(tokens.map((t) => t.position)).toEqual([6, 7, 8]);
      expect(tokens.map((t) => t.stopReason)).toEqual([undefined, undefined, 'context']);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      short.dispose();
    }
  });

  it('a windowed model rolls past max_position_embeddings', () => {
    const long = Transformer.load(modelDir('mistral-tiny'), { overrides: { maxPositionEmbeddings: 8 } });
    try {
      const tokens = generateSync(long, PROMPT.slice(0, 6), { maxNewTokens: 10, stopAtEos: false });
      expect(tokens).toHaveLength(10);
      expect(tokens.at(-1)!.stopReason).toBe('length');
    } finally {
      long.dispose();
    }
  });

  it.each([
    [{ temperature: -1 }, 'temperature must be a finite number ≥ 0, got -1'],
    [{ temperature: Number.NaN }, 'temperature must be a finite number ≥ 0, got NaN'],
    [{ temperature: 1, topK: 0 }, 'topK must be an integer ≥ 1, got 0'],
    [{ temperature: 1, topP: 0 }, 'topP must be in (0, 1], got 0'],
    [{ temperature: 1, topP: 1.5 }, 'topP must be in (0, 1], got 1.5'],
    [{ maxNewTokens: -1 }, 'maxNewTokens must be an integer ≥ 0, got -1'],
    [{ prefillChunk: 0 }, 'prefillChunk must be an integer ≥ 1, got 0'],
    [{ temperature: 1, seed: 2 ** 32 }, 'seed must be an integer in [0, 2^32), got 4294967296'],
    [{ stopIds: [1000] }, 'stop id 1000 is outside the vocabulary [0, 1000)'],
  ])('options %j', (opts, message) => {
    const before = tf.memory().numTensors;
    const e = err(() => generateSync(window8, [1, 2], opts));
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toBe(message);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('stopping', () => {
  it('stops after an eos id (yielded, marked) unless told not to, and after stop ids', () => {
    const free = generateSync(window8, PROMPT, { maxNewTokens: 16, stopAtEos: false });
    const stopAt = free[5]!.id;
    const stopped = generateSync(window8, PROMPT, { maxNewTokens: 16, stopAtEos: false, stopIds: [stopAt] });
    const first = free.findIndex((t) => t.id === stopAt);
    expect(stopped.map((t) => t.id)).toEqual(free.slice(0, first + 1).map((t) => t.id));
    expect(stopped.at(-1)!.stopReason).toBe('stop');

    const asEos = Transformer.load(modelDir('mistral-tiny'), { overrides: { eosTokenIds: [stopAt] } });
    try {
      const eos = generateSync(asEos, PROMPT, { maxNewTokens: 16 });
      expect(eos.map((t) => t.id)).toEqual(stopped.map((t) => t.id));
      expect(eos.at(-1)!.stopReason).toBe('eos');
      expect(generateSync(asEos, PROMPT, { maxNewTokens: 16, stopAtEos: false })).toHaveLength(16);
    } finally {
      asEos.dispose();
    }
  });

  it('maxNewTokens 0 yields nothing; 1 yields one token marked length', () => {
    expect(generateSync(window8, PROMPT, { maxNewTokens: 0 })).toEqual([]);
    const one = generateSync(window8, PROMPT, { maxNewTokens: 1, stopAtEos: false });
    expect(one).toHaveLength(1);
    expect(one[0]!.stopReason).toBe('length');
  });

  it('logprob is the log softmax of the logits at the chosen id', () => {
    const [t] = generateSync(window8, PROMPT, { maxNewTokens: 1, returnLogits: true });
    const l = Array.from(t!.logits!);
    const max = Math.max(...l);
    const lse = max + Math.log(l.reduce((a, x) => a + Math.exp(x - max), 0));
    expect(t!.logprob).toBeCloseTo(l[t!.id]! - lse, 10);
    expect(t!.logprob).toBeLessThan(0);
  });
});
