/**
 * The whole-layer simd path (model/simd-block.ts): layers no hook watches run over one
 * Float32Array. It must compute exactly what the per-step path of block.ts computes on the
 * same kernels (same products row by row, same fused steps), so a hook that only watches
 * a layer changes nothing, bit for bit, and switching between the two paths mid-model
 * (hooks on some layers only) is invisible. Also its parts: the gate|up and q|k|v products
 * as one, and the SwiGLU kernel at its edges.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { useBackend } from '../src/kernels/backend.js';
import { swigluFused } from '../src/kernels/fused.js';
import { WeightMemory } from '../src/kernels/simd/arena.js';
import { matmul, matmulConcat, type StoredMatrix } from '../src/kernels/simd/matmul.js';
import type { Hooks } from '../src/model/hooks.js';
import { allFiniteArray } from '../src/model/simd-block.js';
import { disposeResult } from '../src/model/transformer.js';
import { GOLDEN_MODELS, withModel } from './helpers/fixtures.js';

/** A hook that watches `point` in the given layers and changes nothing. */
function watching(layers: readonly number[], point: string): Hooks {
  return new Map(layers.map((l) => [`blocks.${l}.${point}`, () => undefined]));
}

describe.each(['cpu', 'wasm'] as const)('whole-layer simd path on %s', (backend) => {
  it.each(GOLDEN_MODELS)('$model: logits equal the per-step path bit for bit, whichever layers are watched', ({ model }) =>
    withModel(model, { backend, weights: 'resident' }, (m) => {
      const L = m.config.numLayers;
      const ids = Array.from({ length: 2 * (m.config.slidingWindow ?? 8) + 3 }, (_, i) => (i * 29 + 3) % m.config.vocabSize);
      const run = (hooks?: Hooks, lastOnly = false) => {
        const r = m.forward(ids, { ...(hooks ? { hooks } : {}), lastOnly });
        const out = Array.from(r.logits.dataSync());
        disposeResult(r);
        return out;
      };
      const arrays = run();
      // hook_resid_pre keeps the fused steps (only the pattern and scores force the composite attention)
      expect(run(watching(Array.from({ length: L }, (_, l) => l), 'hook_resid_pre'))).toEqual(arrays);
      expect(run(watching([0], 'hook_resid_post'))).toEqual(arrays); // tensor first, then arrays
      expect(run(watching([L - 1], 'mlp.hook_post'))).toEqual(arrays); // arrays, then a tensor at the end
      // the top (final norm, lm_head) on the array, or through tensors when a hook watches it
      const logitsHook: Hooks = new Map([['hook_logits', () => undefined]]);
      expect(run(logitsHook)).toEqual(arrays);
      // lastOnly: one token through lm_head (the matrix-vector kernel, so not bit for bit the
      // last row above); the same on both paths
      const last = run(undefined, true);
      expect(last).toHaveLength(m.config.vocabSize);
      expect(run(logitsHook, true)).toEqual(last);
      expect(run(watching([L - 1], 'mlp.hook_post'), true)).toEqual(last);
    }));
});

describe('the products and the gate', () => {
  const memory = new WeightMemory();
  afterAll(() => memory.dispose());

  /** A bf16 [rows, cols] matrix of seeded values in fresh kernel memory. */
  function matrix(rows: number, cols: number, seed: number): StoredMatrix {
    const a = memory.alloc(2 * rows * cols);
    const u = new Uint16Array(a.arena.memory.buffer, a.ptr, rows * cols);
    let s = seed;
    for (let i = 0; i < u.length; i++) u[i] = 0x3c00 + ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 22); // ±[2^-7, 2^-5)
    return { ...a, rows, cols, dtype: 'bf16' };
  }

  it.each([1, 7])('matmulConcat over weights stored apart and one after the other equals the products one by one (%i tokens)', (T) => {
    const K = 40;
    const x = Float32Array.from({ length: T * K }, (_, i) => Math.sin(i * 0.37));
    const a = matrix(12, K, 1);
    matrix(4, K, 99); // a gap: b is not where a ends
    const b = matrix(8, K, 2);
    const c = matrix(20, K, 3); // c follows b
    const expected = (ms: StoredMatrix[]) => {
      const rows = ms.reduce((n, m) => n + m.rows, 0);
      const out = new Float32Array(T * rows);
      let col = 0;
      for (const m of ms) {
        const y = matmul(x, T, m);
        for (let t = 0; t < T; t++) for (let r = 0; r < m.rows; r++) out[t * rows + col + r] = y[t * m.rows + r]!;
        col += m.rows;
      }
      return Array.from(out);
    };
    expect(Array.from(matmulConcat(x, T, [a, b, c]))).toEqual(expected([a, b, c]));
    expect(Array.from(matmulConcat(x, T, [b, c]))).toEqual(expected([b, c]));
  });

  it('the SwiGLU kernel: tails, both signs of large gates, NaN and ±Inf, as the composite ops give them', async () => {
    await useBackend('cpu');
    tf.tidy(() => {
      const I = 11; // two lanes of four and a tail of three
      const g = tf.tensor2d([
        [-100, -88, -30, -1, -1e-30, 0, 1e-30, 1, 30, 88, 100],
        [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3, -3, 0.5, -0.5, 7, -7, 1e5, -1e5],
      ]);
      const u = tf.tensor2d([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]);
      const fused = swigluFused(g, u).dataSync();
      const composite = tf.mul(tf.mul(g, tf.sigmoid(g)), u).dataSync();
      for (let i = 0; i < 2 * I; i++) {
        const want = composite[i]!;
        if (!Number.isFinite(want)) expect(fused[i]).toBe(want); // NaN, or the same infinity
        else expect(Math.abs(fused[i]! - want)).toBeLessThanOrEqual(4e-7 * Math.abs(want) + 1e-37);
      }
    });
  });
});

describe('the last layer of a prefill on its last rows only (simdLastRows)', () => {
  it.each(GOLDEN_MODELS)('$model: the logits and then the decode steps equal a prefill whose last layer computes every row, bit for bit', ({ model }) =>
    withModel(model, { backend: 'wasm', weights: 'resident' }, (m) => {
      const V = m.config.vocabSize;
      const W = m.config.slidingWindow ?? 8;
      // a prompt longer than the window (a rolling cache's chunk over slots in use), and a
      // prefill in two chunks, the second of them 2 tokens (simdLastRows' least)
      const ids = Array.from({ length: 2 * W + 3 }, (_, i) => (i * 31 + 7) % V);
      const decode = (chunks: number[][], lastOnly: boolean, hooks?: Hooks) => {
        const cache = m.createCache();
        const out: number[][] = [];
        try {
          for (const chunk of chunks) {
            const r = m.forward(chunk, { cache, lastOnly, ...(hooks ? { hooks } : {}) });
            out.push(Array.from(r.logits.dataSync().slice(-V)));
            disposeResult(r);
          }
          for (const id of [3, 1, 4, 1, 5]) {
            const r = m.forward([id % V], { cache, lastOnly: true });
            out.push(Array.from(r.logits.dataSync()));
            disposeResult(r);
          }
        } finally {
          cache.dispose();
        }
        return out;
      };
      const L = m.config.numLayers;
      for (const chunks of [[ids], [ids.slice(0, -2), ids.slice(-2)]]) {
        const lastRowsOnly = decode(chunks, true);
        // the last layer watched: it runs every row (through the per-step path, equal bit for bit to the whole-layer one)
        expect(lastRowsOnly).toEqual(decode(chunks, true, watching([L - 1], 'mlp.hook_post')));
        // every row's logits: the products of lm_head for all rows, so the last row is compared within float32 noise
        const full = decode(chunks, false);
        expect(lastRowsOnly.slice(chunks.length)).toEqual(full.slice(chunks.length)); // the cache is the same: decode equal
        for (let i = 0; i < chunks.length; i++) {
          const d = Math.max(...lastRowsOnly[i]!.map((x, j) => Math.abs(x - full[i]![j]!)));
          expect(d).toBeLessThan(1e-5);
        }
      }
    }));
});

describe('allFiniteArray', () => {
  it('finds a NaN or an infinity at any place, in the four-way sums and the tail', () => {
    for (let n = 1; n <= 11; n++) {
      const x = Float32Array.from({ length: n }, (_, i) => (i % 2 ? -3e38 : 3e38)); // finite, though their sum is not
      expect(allFiniteArray(x)).toBe(true);
      for (let i = 0; i < n; i++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const y = x.slice();
          y[i] = bad;
          expect(allFiniteArray(y)).toBe(false);
        }
      }
    }
    expect(allFiniteArray(new Float32Array(0))).toBe(true);
  });
});
