/**
 * The rolling cache's bookkeeping on hand-made tensors: which slot each position lands
 * in, what a step attends to, and that its memory stays at W slots. The key of position
 * p is filled with the value p, so every returned row can be checked by eye.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '../src/kernels/backend.js';
import { FullCache, ModelCache, RollingCache } from '../src/model/cache.js';
import { EMPTY_SLOT } from '../src/model/mask.js';

const KV = 2;
const D = 3;

/** Keys [kvHeads, tokens, headDim] for these positions: every entry of position p is p (head 1: −p). */
function keysAt(positions: number[]): tf.Tensor3D {
  const data = [1, -1].flatMap((sign) => positions.flatMap((p) => new Array<number>(D).fill(sign * p)));
  return tf.tensor3d(data, [KV, positions.length, D]);
}

/** The position each returned key row holds (read back from head 0), EMPTY_SLOT's rows are zeros. */
function rowsOf(k: tf.Tensor3D): number[] {
  const a = k.arraySync();
  return a[0]!.map((row) => row[0]!);
}

/** One update; returns what the step attends to, as plain arrays, and disposes everything. */
function step(cache: RollingCache | FullCache, positions: number[]): { positions: number[]; keys: number[]; values: number[] } {
  return tf.tidy(() => {
    const k = keysAt(positions);
    const v = tf.mul(keysAt(positions), 10) as tf.Tensor3D;
    const seen = cache.update(k, v, positions);
    return { positions: [...seen.positions], keys: rowsOf(seen.k), values: rowsOf(seen.v) };
  });
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('RollingCache', () => {
  it('follows the worked example of cache.ts (W = 4: chunk 0–3, chunk 4–5, token 6)', () => {
    const before = tf.memory().numTensors;
    const cache = new RollingCache(4);
    const E = EMPTY_SLOT;

    const a = step(cache, [0, 1, 2, 3]);
    expect(a.positions).toEqual([E, E, E, E, 0, 1, 2, 3]);
    expect(a.keys).toEqual([0, 0, 0, 0, 0, 1, 2, 3]); // empty slots are zeros, masked by position

    const b = step(cache, [4, 5]);
    expect(b.positions).toEqual([0, 1, 2, 3, 4, 5]); // slots [0 1 2 3] + the chunk
    expect(b.keys).toEqual([0, 1, 2, 3, 4, 5]);

    const c = step(cache, [6]);
    expect(c.positions).toEqual([4, 5, 2, 3, 6]); // slots [4 5 2 3]: 4 → slot 0, 5 → slot 1
    expect(c.keys).toEqual([4, 5, 2, 3, 6]);
    expect(c.values).toEqual([40, 50, 20, 30, 60]);

    const d = step(cache, [7]);
    expect(d.positions).toEqual([4, 5, 6, 3, 7]); // 6 → slot 2

    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('keeps the newest key per slot when a chunk is longer than W', () => {
    const cache = new RollingCache(3);
    step(cache, [0, 1, 2, 3, 4, 5, 6]); // 6 → slot 0, 4 → slot 1, 5 → slot 2
    const next = step(cache, [7]);
    expect(next.positions).toEqual([6, 4, 5, 7]);
    expect(next.keys).toEqual([6, 4, 5, 7]);
    cache.dispose();
  });

  it('holds W slots however many tokens pass: bytes and tensor count stop growing', () => {
    const W = 4;
    const cache = new RollingCache(W);
    const bytes: number[] = [];
    const tensors: number[] = [];
    for (let p = 0; p < 5 * W; p++) {
      step(cache, [p]);
      bytes.push(cache.bytes);
      tensors.push(tf.memory().numTensors);
    }
    // keys + values, float32: 2 · 4 bytes · kvHeads · W · headDim, from the first token on.
    expect(new Set(bytes)).toEqual(new Set([2 * 4 * KV * W * D]));
    expect(new Set(tensors).size).toBe(1);
    cache.dispose();
    expect(cache.bytes).toBe(0);
  });

  it('restarts empty after dispose', () => {
    const cache = new RollingCache(2);
    step(cache, [0, 1]);
    cache.dispose();
    expect(step(cache, [0]).positions).toEqual([EMPTY_SLOT, EMPTY_SLOT, 0]);
    cache.dispose();
  });
});

describe('FullCache', () => {
  it('keeps every key, in order, and grows by one row per token', () => {
    const cache = new FullCache();
    step(cache, [0, 1, 2]);
    const s = step(cache, [3]);
    expect(s.positions).toEqual([0, 1, 2, 3]);
    expect(s.keys).toEqual([0, 1, 2, 3]);
    expect(cache.bytes).toBe(2 * 4 * KV * 4 * D);
    step(cache, [4]);
    expect(cache.bytes).toBe(2 * 4 * KV * 5 * D);
    cache.dispose();
  });
});

describe('ModelCache', () => {
  it('makes one rolling cache per layer with a window, one full cache without', () => {
    const rolling = new ModelCache(3, 5);
    expect(rolling.layers).toHaveLength(3);
    expect(rolling.layers.every((l) => l instanceof RollingCache && l.window === 5)).toBe(true);
    const full = new ModelCache(2, null);
    expect(full.layers.every((l) => l instanceof FullCache)).toBe(true);
    expect(rolling.length).toBe(0);
  });
});
