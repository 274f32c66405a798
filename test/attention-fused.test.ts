/**
 * The fused attention kernel (simd kernels) against the composite tfjs path it replaces:
 * same logits within the golden tolerance and the same greedy ids, on every golden model,
 * for a full forward, chunked prefill through a window that wraps, and decoding.
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { generate } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { fusedAttention } from '../src/kernels/simd/attention.js';
import type { Hooks } from '../src/model/hooks.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { GOLDEN_MODELS, modelDir } from './helpers/fixtures.js';

/** A hook that only watches attn.hook_pattern in every layer: it forces the composite path. */
function compositeHooks(layers: number): Hooks {
  return new Map(Array.from({ length: layers }, (_, l) => [`blocks.${l}.attn.hook_pattern`, () => undefined]));
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

describe('fusedAttention', () => {
  it('matches a float64 softmax(q·kᵀ/√D)·v with the causal window, over arbitrary key order and empty slots', () => {
    const T = 5, H = 4, KV = 2, D = 8, W = 3;
    const qpos = [7, 8, 9, 10, 11];
    const kpos = [9, -1, 6, 7, 8, 10, 11, 5]; // slot order of a rolling cache, one empty slot
    const S = kpos.length;
    const q = Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(i * 1.3));
    const k = Float32Array.from({ length: KV * S * D }, (_, i) => Math.cos(i * 0.7));
    const v = Float32Array.from({ length: KV * S * D }, (_, i) => Math.sin(i * 0.3) * 2);
    const z = fusedAttention(q, qpos, { heads: H, kvHeads: KV, headDim: D, window: W }, (into) => {
      const a = into(S);
      a.k.set(k);
      a.v.set(v);
      return kpos;
    });
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KV));
        const seen = kpos.map((p, j) => [p, j] as const).filter(([p]) => p >= 0 && p <= qpos[t]! && p > qpos[t]! - W);
        expect(seen.length).toBe(Math.min(W, qpos[t]! - 4));
        const s = seen.map(([, j]) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(t * H + h) * D + d]! * k[(g * S + j) * D + d]!;
          return dot / Math.sqrt(D);
        });
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const l = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) {
          const want = seen.reduce((acc, [, j], i) => acc + (e[i]! / l) * v[(g * S + j) * D + d]!, 0);
          expect(Math.abs(z[(t * H + h) * D + d]! - want)).toBeLessThan(1e-6);
        }
      }
    }
  });
});

describe.each(['cpu', 'wasm'] as const)('fused vs composite attention on %s', (backend) => {
  it.each(GOLDEN_MODELS)('$model', async ({ model }) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const m = Transformer.load(modelDir(model), { weights: 'resident' });
    try {
      const c = m.config;
      if (c.headDim % 4 !== 0) return; // the fused kernel does not serve this model
      const hooks = compositeHooks(c.numLayers);
      // longer than the window (W = 8 in the tiny models, 16 in the demos): chunks wrap the rolling cache
      const ids = Array.from({ length: 3 * (c.slidingWindow ?? 8) + 5 }, (_, i) => (i * 37 + 1) % c.vocabSize);

      const fused = m.forward(ids);
      const composite = m.forward(ids, { hooks });
      const tol = 5e-5 + 1e-6 * maxAbs(composite.logits.dataSync());
      expect(maxDiff(fused.logits.dataSync(), composite.logits.dataSync())).toBeLessThanOrEqual(tol);
      disposeResult(fused);
      disposeResult(composite);

      // the fused path, as generate() runs it
      const a: number[] = [];
      for await (const t of generate(m, ids.slice(0, 13), { maxNewTokens: 20, stopAtEos: false, prefillChunk: 5 })) a.push(t.id);
      // the composite path, chunk by chunk through the cache
      const cache = m.createCache();
      const b: number[] = [];
      let next = ids.slice(0, 13);
      for (let s = 0; s < 20; s++) {
        for (let i = 0; i < next.length; i += 5) {
          const r = m.forward(next.slice(i, i + 5), { cache, hooks, lastOnly: true });
          if (i + 5 >= next.length) {
            const l = r.logits.dataSync();
            let best = 0;
            for (let j = 1; j < l.length; j++) if (l[j]! > l[best]!) best = j;
            b.push(best);
          }
          disposeResult(r);
        }
        next = [b.at(-1)!];
      }
      cache.dispose();
      expect(a).toEqual(b);
    } finally {
      m.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
