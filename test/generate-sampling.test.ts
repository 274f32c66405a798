/**
 * Sampling (temperature, top-k, top-p, the seeded generator) on hand-made logits, the
 * text stream on a toy SentencePiece-style decoder, and seeded generation on a real
 * model: same seed, same tokens, on every run and on cpu and wasm.
 */
import { describe, expect, it } from 'vitest';
import { argmax, candidates, generateSync, logProbability, sampleToken, SeededRandom, TextStream } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { modelDir } from './helpers/fixtures.js';

describe('SeededRandom (mulberry32)', () => {
  it('gives the reference sequence (values from an independent Python implementation)', () => {
    const r = new SeededRandom(42);
    expect([r.next(), r.next(), r.next()]).toEqual([0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
    const z = new SeededRandom(0);
    expect([z.next(), z.next(), z.next()]).toEqual([0.26642920868471265, 0.0003297457005828619, 0.2232720274478197]);
  });

  it('draws in [0, 1), roughly uniformly', () => {
    const r = new SeededRandom(7);
    const draws = Array.from({ length: 20000 }, () => r.next());
    expect(draws.every((u) => u >= 0 && u < 1)).toBe(true);
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const lowTenth = draws.filter((u) => u < 0.1).length / draws.length;
    expect(Math.abs(lowTenth - 0.1)).toBeLessThan(0.01);
  });
});

describe('choosing a token', () => {
  it('greedy takes the largest logit, ties to the lowest id', () => {
    expect(argmax([0, 3, 1, 3])).toBe(1);
    expect(sampleToken([0, 3, 1, 3], {}, new SeededRandom(1))).toBe(1);
    expect(sampleToken([0, 3, 1, 3], { temperature: 0, topK: 2 }, new SeededRandom(1))).toBe(1);
  });

  it('follows the worked example of sampling.ts: logits [2, 1, 1, 0], top-k 3, top-p 0.6', () => {
    const { ids, probs } = candidates([2, 1, 1, 0], { temperature: 1, topK: 3, topP: 0.6 });
    expect(ids).toEqual([0, 1]);
    const e = Math.E;
    expect(probs[0]).toBeCloseTo(e / (e + 1), 12); // 0.731
    expect(probs[1]).toBeCloseTo(1 / (e + 1), 12);
  });

  it('top-k keeps the k largest, ties at the cut to the lower id', () => {
    expect(candidates([1, 5, 5, 5, 0], { temperature: 1, topK: 2 }).ids).toEqual([1, 2]);
  });

  it('top-p keeps at least one token, and the prefix that first reaches p', () => {
    expect(candidates([0, Math.log(2), Math.log(7)], { temperature: 1, topP: 1e-9 }).ids).toEqual([2]);
    // probabilities 0.7, 0.2, 0.1: p = 0.65 is reached by the first, p = 0.75 needs two
    const logits = [Math.log(0.1), Math.log(0.2), Math.log(0.7)];
    expect(candidates(logits, { temperature: 1, topP: 0.65 }).ids).toEqual([2]);
    expect(candidates(logits, { temperature: 1, topP: 0.75 }).ids).toEqual([2, 1]);
    expect(candidates(logits, { temperature: 1, topP: 0.95 }).ids).toEqual([2, 1, 0]);
    expect(candidates(logits, { temperature: 1, topP: 1 }).ids).toEqual([2, 1, 0]);
  });

  it('temperature scales the logits before the softmax', () => {
    const logits = [0, Math.log(4)]; // at T = 1: 0.2, 0.8; at T = 2: 1/3, 2/3
    expect(candidates(logits, { temperature: 1 }).probs).toEqual([expect.closeTo(0.8, 12), expect.closeTo(0.2, 12)]);
    expect(candidates(logits, { temperature: 2 }).probs).toEqual([expect.closeTo(2 / 3, 12), expect.closeTo(1 / 3, 12)]);
  });

  it('draws each token as often as its probability', () => {
    const logits = [0, Math.log(2), Math.log(4)]; // 1/7, 2/7, 4/7
    const rng = new SeededRandom(123);
    const counts = [0, 0, 0];
    const n = 30000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 1 }, rng)]!++;
    [1 / 7, 2 / 7, 4 / 7].forEach((p, id) => expect(Math.abs(counts[id]! / n - p)).toBeLessThan(0.01));
  });

  it('never draws a token that top-k or top-p removed', () => {
    const rng = new SeededRandom(5);
    const logits = [3, 2.9, 2.8, 0, -1, 2.7];
    for (let i = 0; i < 2000; i++) {
      expect([0, 1]).toContain(sampleToken(logits, { temperature: 5, topK: 2 }, rng));
      expect([0, 1, 2]).toContain(sampleToken(logits, { temperature: 1, topP: 0.5 }, rng));
    }
  });

  it('logProbability is log softmax at the id', () => {
    expect(logProbability([0, Math.log(3)], 1)).toBeCloseTo(Math.log(3 / 4), 12);
    expect(logProbability([1000, 1000], 0)).toBeCloseTo(Math.log(0.5), 12); // no overflow
  });

  it.each([32000, 32003, 131072])('logProbability over %i float32 logits (the kernels sum them) equals the float64 loop', (n) => {
    let s = n;
    const logits = Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 40 - 30);
    logits[5] = -Infinity; // a token a constraint masked out
    logits[n - 1] = 12; // the max, in the odd tail
    const max = 12;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(logits[i]! - max);
    for (const id of [0, 5, 17, n - 2, n - 1]) {
      const want = logits[id]! - max - Math.log(sum);
      if (id === 5) expect(logProbability(logits, id)).toBe(-Infinity);
      else expect(Math.abs(logProbability(logits, id) - want)).toBeLessThan(1e-12);
    }
    logits[9] = Number.NaN; // NaN anywhere: NaN, as the loop gives
    expect(logProbability(logits, 0)).toBeNaN();
  });
});

describe('TextStream', () => {
  // A toy SentencePiece-style vocabulary: "▁" is a space dropped at the start of the text;
  // <0x..> pieces are UTF-8 bytes.
  const pieces = ['<s>', '▁is', '▁Pa', 'ris', '<0xE2>', '<0x82>', '<0xAC>', '!'];
  const decode = (ids: readonly number[]): string => {
    const bytes: number[] = [];
    for (const id of ids) {
      const p = pieces[id]!;
      if (p === '<s>') continue;
      const byte = /^<0x([0-9A-F]{2})>$/.exec(p);
      if (byte) bytes.push(parseInt(byte[1]!, 16));
      else bytes.push(...new TextEncoder().encode(p.replace(/▁/g, ' ')));
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).replace(/^ /, '');
  };

  it('follows the worked example of text.ts: spacing from the context, bytes held until complete', () => {
    const s = new TextStream(decode, [1]);
    expect([2, 3, 4, 5, 6, 7].map((id) => s.push(id))).toEqual([' Pa', 'ris', '', '', '€', '!']);
    expect(s.text).toBe(' Paris€!');
    expect(s.flush()).toBe('');
  });

  it('without context (or after BOS only) the first piece loses its space, like the decoder', () => {
    const s = new TextStream(decode, [0]);
    expect(s.push(2)).toBe('Pa');
    expect(s.push(3)).toBe('ris');
  });

  it('decodes in a window: ids decoded grow linearly with the tokens streamed (issue 14: was quadratic)', () => {
    let decoded = 0;
    const counting = (ids: readonly number[]) => { decoded += ids.length; return decode(ids); };
    const s = new TextStream(counting, [1]);
    const ids = Array.from({ length: 4000 }, (_, i) => [2, 3, 4, 5, 6, 7][i % 6]!);
    const out = ids.map((id) => s.push(id)).join('') + s.flush();
    expect(out).toBe(decode([1, ...ids]).slice('is'.length));
    expect(s.text).toBe(out);
    expect(decoded).toBeLessThan(20 * ids.length); // re-decoding everything: ~8 million
  });

  it('flush returns an incomplete character at the end', () => {
    const s = new TextStream(decode, [1]);
    expect(s.push(4)).toBe('');
    expect(s.flush()).toBe('\uFFFD');
  });
});

describe('seeded generation on mistral-tiny', () => {
  const prompt = [1, 269, 505, 717, 918, 977];
  const opts = { maxNewTokens: 24, temperature: 1.2, topK: 50, topP: 0.95, stopAtEos: false } as const;

  it('same seed, same tokens: across runs and on cpu and wasm; another seed differs', async () => {
    const runs: Record<string, number[]> = {};
    for (const backend of ['cpu', 'wasm'] as const) {
      await useBackend(backend);
      const model = Transformer.load(modelDir('mistral-tiny'));
      try {
        runs[`${backend} a`] = generateSync(model, prompt, { ...opts, seed: 2024 }).map((t) => t.id);
        runs[`${backend} b`] = generateSync(model, prompt, { ...opts, seed: 2024 }).map((t) => t.id);
        runs[`${backend} other`] = generateSync(model, prompt, { ...opts, seed: 2025 }).map((t) => t.id);
      } finally {
        model.dispose();
      }
    }
    expect(runs['cpu a']).toHaveLength(24);
    expect(runs['cpu b']).toEqual(runs['cpu a']);
    expect(runs['wasm a']).toEqual(runs['cpu a']);
    expect(runs['wasm b']).toEqual(runs['cpu a']);
    expect(runs['wasm other']).toEqual(runs['cpu other']);
    expect(runs['cpu other']).not.toEqual(runs['cpu a']);
    // A random-weight model at T = 1.2 spreads its mass: sampling is not secretly greedy.
    await useBackend('cpu');
    const model = Transformer.load(modelDir('mistral-tiny'));
    try {
      const greedy = generateSync(model, prompt, { maxNewTokens: 24, stopAtEos: false }).map((t) => t.id);
      expect(runs['cpu a']).not.toEqual(greedy);
    } finally {
      model.dispose();
    }
  });
});
